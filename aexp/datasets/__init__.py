"""Synthetic data sets with known factors of variation, for checking what the embedders learn."""

from .cards import (
    SUIT_SYMMETRY,
    SUITS,
    Cards,
    cards_regime,
    make_cards,
    semi_supervised_split,
)

__all__ = ["SUITS", "SUIT_SYMMETRY", "Cards", "cards_regime", "make_cards", "semi_supervised_split"]
