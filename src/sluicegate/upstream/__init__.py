"""Connection pools, DNS cache and the forwarder that carries one request to a backend."""
