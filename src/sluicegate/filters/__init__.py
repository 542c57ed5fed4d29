"""The filter chain and its filters, each a module (mitmproxy-style named hooks)."""
