"""A differential corpus: REST-proxy requests recorded from Karapace 6.2.0, replayed against the
gateway (tests/integration/test_restproxy_corpus.py)."""
