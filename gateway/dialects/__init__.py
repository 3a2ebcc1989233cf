"""One module per API dialect, each only translating HTTP ⇄ the shared pipeline and services."""
