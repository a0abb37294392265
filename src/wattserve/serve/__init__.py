"""`serve`: an OpenAI-compatible gateway that routes live requests across a heterogeneous,
multi-site fleet with the same policies and power governor as `simulate`."""
