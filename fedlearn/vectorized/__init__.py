"""Vectorized clients: a round's clients trained and evaluated together with torch.func."""
