//! The guards' promises: each server picks its own port, and dropping the guard kills it.

use std::net::TcpStream;

use openshell_test_support::nats::NatsServer;
use openshell_test_support::nats::accounts::AccountsServer;
use openshell_test_support::sshd::Sshd;

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

fn port_of(url: &str) -> u16 {
    let (_, port) = url.rsplit_once(':').expect("url with a port");
    port.parse().expect("numeric port")
}

#[tokio::test]
async fn nats_servers_pick_their_own_ports_and_die_with_their_guards() {
    let (Some(first), Some(second)) = (NatsServer::start().await, NatsServer::start().await) else {
        return;
    };
    assert_ne!(first.port(), second.port());
    let port = first.port();
    drop(first);
    assert!(
        refused(port),
        "nats-server still listens on {port} after drop"
    );
    assert!(!refused(second.port()), "the other server went with it");
}

#[tokio::test]
async fn the_accounts_server_dies_with_its_guard() {
    let Some(server) = AccountsServer::start().await else {
        return;
    };
    let port = port_of(&server.url);
    assert!(!refused(port));
    drop(server);
    assert!(
        refused(port),
        "nats-server still listens on {port} after drop"
    );
}

#[tokio::test]
async fn sshd_dies_with_its_guard() {
    let Some(sshd) = Sshd::start().await else {
        return;
    };
    let port = sshd.port();
    drop(sshd);
    assert!(refused(port), "sshd still listens on {port} after drop");
}
