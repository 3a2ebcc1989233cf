"""A differential corpus: REST-proxy requests recorded against Karapace 6.2.0, replayed against the gateway."""
