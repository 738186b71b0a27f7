"""The Feast online lookup for entity requests, at ~0.1 ms instead of ~6 ms per call."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from smart_energy.components.errors import SmartEnergyError
from smart_energy.serving.logic import RequestError

FEATURE_VIEW_REFRESH_SECONDS = 300.0


class OnlineFeatureReader:
    """Reads the feature service's views from Feast's online store, one ``online_read`` per view.

    ``FeatureStore.get_online_features`` costs ~4.6 ms a call here even with the registry cached (feature
    references resolved and converted to and from protos on every call); this resolves the service's views
    once (and again every ``FEATURE_VIEW_REFRESH_SECONDS``) and reads through the provider Feast's public
    ``get_provider(config)`` builds for the same repo config (the provider the store itself uses), with the
    same entity-key encoding, so the features are Feast's, at ~0.1 ms.
    """

    def __init__(self, store: Any, service_name: str, features: Sequence[str]):
        from feast.infra.provider import get_provider

        self.store = store
        self.provider = get_provider(store.config)
        self.service_name = service_name
        self.features = list(features)
        self._views: list[tuple[Any, list[int], list[str]]] = []
        self._resolved_at = -math.inf

    def _resolve(self) -> None:
        service = self.store.get_feature_service(self.service_name)
        index = {name: i for i, name in enumerate(self.features)}
        views, seen = [], set()
        for projection in service.feature_view_projections:
            view = self.store.get_feature_view(projection.name)
            names = [f.name for f in projection.features if f.name in index]
            views.append((view, [index[n] for n in names], names))
            seen.update(names)
        missing = [f for f in self.features if f not in seen]
        if missing:
            raise SmartEnergyError(f"feature service {self.service_name} lacks model feature(s) {', '.join(missing)}")
        self._views = views
        self._resolved_at = time.monotonic()

    def read(self, meter_ids: Sequence[str], hours: Sequence[datetime | None] | None = None,
             event_hours_out: list | None = None) -> np.ndarray:
        """Feature matrix in model order; unknown or stale meters raise ``RequestError`` (404 / 422).

        ``event_hours_out``, when given, receives each row's hour (the hour its features forecast).
        """
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        if time.monotonic() - self._resolved_at > FEATURE_VIEW_REFRESH_SECONDS:
            self._resolve()
        keys = [EntityKey(join_keys=["meter_id"], entity_values=[Value(string_val=m)]) for m in meter_ids]
        provider = self.provider
        matrix = np.full((len(meter_ids), len(self.features)), np.nan)
        event_hours: list[datetime | None] = [None] * len(meter_ids)
        for view, columns, names in self._views:
            for row, (event_ts, values) in enumerate(provider.online_read(self.store.config, view, keys, names)):
                if values is None:
                    raise RequestError(f"no online features for meter {meter_ids[row]!r} in {view.name} (unknown "
                                       f"meter, or its features were never materialised)",
                                       status=404, reason="unknown_meter")
                for col, name in zip(columns, names):
                    proto = values.get(name)
                    kind = proto.WhichOneof("val") if proto is not None else None
                    if kind is not None:
                        matrix[row, col] = float(getattr(proto, kind))
                if event_ts is not None:
                    event_hours[row] = max(event_hours[row] or event_ts, event_ts)
        for row, wanted in enumerate(hours or []):
            have = event_hours[row]
            have = have.replace(tzinfo=timezone.utc) if have is not None and have.tzinfo is None else have
            if wanted is not None and have != wanted:
                raise RequestError(
                    f"online features for meter {meter_ids[row]!r} are for hour "
                    f"{have.isoformat() if have else 'unknown'}, not the requested {wanted.isoformat()}; "
                    f"the online store holds the latest hour only (push or materialise newer readings)",
                    status=422, reason="stale_features")
        if event_hours_out is not None:
            event_hours_out[:] = [h.replace(tzinfo=timezone.utc) if h is not None and h.tzinfo is None else h
                                  for h in event_hours]
        return matrix
