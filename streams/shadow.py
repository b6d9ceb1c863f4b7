"""A candidate model run in shadow: on the same closes as the served model, from the same items,
its forecasts published to ``forecasts-shadow`` and scored to ``forecast-errors-shadow`` when
their targets close, with the same rules (``state.refresh.close_items``); nothing it makes is
served. Its item models live in memory only: an item's first close under the shadow (after the
candidate is published, a restart or a rebalance) makes its state from the closed periods the
item keeps, as a promotion would (``rebuild_states``), so a shadow forecast is the one the
candidate would serve if it were promoted then. The errors it scores are taken into its states
by the close that scores them, as the served model's are."""
from __future__ import annotations

from mqstream.models.protocol import QuantileForecaster
from mqstream.periods import Cadence
from mqstream.state.item import ItemModel, ItemState
from mqstream.state.ledger import Ledgers
from mqstream.state.refresh import RefreshPolicy, close_items, new_model, rebuild_states
from mqstream.streams.publisher import Publisher


class Shadow:
    def __init__(self, model: QuantileForecaster, policy: RefreshPolicy, publisher: Publisher, cadence: Cadence):
        self.model, self.policy, self.publisher, self.cadence = model, policy, publisher, cadence
        self.item_models: dict[int, dict[bytes, ItemModel]] = {}  # partition -> item -> its shadow item model

    def forget(self, partitions) -> None:
        for partition in partitions:
            self.item_models.pop(partition, None)

    async def close(self, partition: int, items: list[ItemState], through: int) -> None:
        """Close ``items`` (copies, as they were before the served close) through ``through``."""
        known = self.item_models.setdefault(partition, {})
        self._start([item for item in items if item.item_id.encode() not in known], known)
        item_models = [known[item.item_id.encode()] for item in items]
        refresh = close_items(items, item_models, through, self.model, self.policy)  # errors fed back in it
        await self.publisher.publish(refresh)

    def _start(self, items: list[ItemState], known: dict[bytes, ItemModel]) -> None:
        """Item models for items new to the shadow: from the periods each has closed, or new
        where it has closed none yet."""
        empty = Ledgers.empty_bytes(self.model.horizons, len(self.model.quantiles))
        closed = [item for item in items if item.closed_through >= item.born]
        started = [ItemModel(item.closed_through, b"", empty) for item in closed]
        rebuild_states(closed, started, self.model, self.cadence)
        for item, item_model in zip(closed, started):
            known[item.item_id.encode()] = item_model
        for item in items:
            if item.closed_through < item.born:
                known[item.item_id.encode()] = new_model(item.launch_info(item.born, self.cadence), item.born,
                                                         self.model)
