//! `udp-echo PORT`: listens on UDP PORT, says `ready`, answers the first
//! datagram with its own bytes, prints it and exits. Busybox's `nc` has no
//! UDP, and the step 05 tests need a UDP server inside a container; built
//! static, like `breakout`, because the workshop rootfs has no libraries.

use std::net::UdpSocket;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: udp-echo PORT");
        return ExitCode::from(2);
    };
    let socket = match UdpSocket::bind(("0.0.0.0", port)) {
        Ok(socket) => socket,
        Err(error) => {
            eprintln!("udp-echo: bind port {port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("ready");
    let mut buffer = [0u8; 1500];
    match socket.recv_from(&mut buffer) {
        Ok((length, from)) => {
            let _ = socket.send_to(&buffer[..length], from);
            println!("{}", String::from_utf8_lossy(&buffer[..length]));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("udp-echo: {error}");
            ExitCode::FAILURE
        }
    }
}
