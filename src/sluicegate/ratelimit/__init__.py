"""Cost-based rate limits: request costs (token types and CEL), budgets and the stores that count them."""
