"""Client APIs: one module per endpoint; gateway.py dispatches to them."""
