"""The evaluation's picture grid: a few held-out photos as every method leaves them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medeid.synth.conditions import DISEASES, PERIOCULAR_TUMOUR

GRID_COLUMNS = 6


@dataclass
class Grid:
    """A few held-out photos as every method leaves them: one row a method, one column a photo."""

    rows: dict[str, list[np.ndarray]]
    columns: list[str]


class GridPicker:
    """Chooses the grid's photos as batches stream past: the first of each disease, tumours first,
    then others to fill GRID_COLUMNS; keeps only their pictures."""

    def __init__(self, columns: int = GRID_COLUMNS):
        self.columns = columns
        self.by_disease: dict[int, dict[str, np.ndarray]] = {}
        self.fillers: list[tuple[int, dict[str, np.ndarray]]] = []

    def offer(self, diseases: np.ndarray, pictures: dict[str, np.ndarray]) -> None:
        def picked(i: int) -> dict[str, np.ndarray]:
            return {row: images[i].copy() for row, images in pictures.items()}  # copies: the batch can go

        for i, disease in enumerate(diseases.tolist()):
            if disease not in self.by_disease:
                self.by_disease[disease] = picked(i)
            elif len(self.fillers) < self.columns:
                self.fillers.append((disease, picked(i)))

    def grid(self) -> Grid:
        tumour = DISEASES.index(PERIOCULAR_TUMOUR)
        order = sorted(self.by_disease, key=lambda d: (d != tumour, d))
        chosen = [(d, self.by_disease[d]) for d in order] + self.fillers
        chosen = chosen[:self.columns]
        rows = {row: [pictures[row] for _, pictures in chosen] for row in (chosen[0][1] if chosen else {})}
        return Grid(rows, [DISEASES[d] for d, _ in chosen])