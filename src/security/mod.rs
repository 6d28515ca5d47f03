//! Who a client is and how its bytes travel: the security protocol of each
//! listener (Kafka's `listener.security.protocol.map`), TLS on the SSL
//! listeners, and the principal a connection acts as.
//!
//! `config` reads the settings (Kafka's key names) and checks them against
//! each other; this module turns them into what a listener runs (a rustls
//! acceptor that reloads its certificates when their files change) and
//! names the peer. The server asks it once per connection.

pub mod principal;
pub mod tls;

pub use crate::config::security::SecurityProtocol;
