"""`wattserve rank`: every device and hosted API for a model, at its best configuration."""

from wattserve.rank.api import Excluded, Ranking, rank
from wattserve.rank.edge import EdgeRow, edge_view
from wattserve.rank.rows import Row

__all__ = ["EdgeRow", "Excluded", "Ranking", "Row", "edge_view", "rank"]
