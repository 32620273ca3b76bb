"""Chapter 3 of the thesis: limit order books (LOBSTER data), valuation models and the
order-book attacks (capital-bounded gradient attacks, random orders, universal transfer).

``book`` holds the tensor contract shared by the data and attack code.
"""
from .attacks import CapitalBoundedAttack, OrderBookAttack, RandomOrders, round_shares
from .book import BookSnippet, collate_snippets, swa
from .measures import capital, cost, measures, relative_size
from .models import LinearValuation, LSTMValuation, MLPValuation, SWAFeatures, create_valuation_model
from .propagation import Routing, propagate, propagate_delta, routing, unpropagated
from .toy import toy_snippets
from .universal import fool_rate, train_universal, transfer_table

__all__ = ["BookSnippet", "collate_snippets", "swa",
           "CapitalBoundedAttack", "OrderBookAttack", "RandomOrders", "round_shares",
           "capital", "cost", "measures", "relative_size",
           "LinearValuation", "LSTMValuation", "MLPValuation", "SWAFeatures", "create_valuation_model",
           "Routing", "propagate", "propagate_delta", "routing", "unpropagated", "toy_snippets",
           "fool_rate", "train_universal", "transfer_table"]

# --- lob-attacks exports (models, propagation, measures, attacks) go above this line ---

# --- lob-data exports (lobster, simulator, snippets) go below this line ---
from .lobster import (EMPTY_ASK_PRICE, EMPTY_BID_PRICE, PRICE_SCALE, LobsterDay, Messages, OrderBook,  # noqa: E402
                      crossed_rows, find_lobster_days, read_messages, read_orderbook, write_messages, write_orderbook)
from .replay import ReplayReport, replay  # noqa: E402
from .simulator import SimulatorConfig, simulate_day, write_simulated_days  # noqa: E402
from .snippets import DayGrid, build_day_grid, snippet_at, symmetric_threshold  # noqa: E402

__all__ += ["EMPTY_ASK_PRICE", "EMPTY_BID_PRICE", "PRICE_SCALE", "LobsterDay", "Messages", "OrderBook",
            "crossed_rows", "find_lobster_days", "read_messages", "read_orderbook", "ReplayReport", "replay",
            "write_messages", "write_orderbook",
            "SimulatorConfig", "simulate_day", "write_simulated_days", "DayGrid", "build_day_grid", "snippet_at",
            "symmetric_threshold"]
