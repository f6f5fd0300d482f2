"""The operator's dashboard at `/dashboard`: health, usage and cost, keys, batch jobs, versions, a playground.

Served by the same process and port as the API, from templates and one script shipped
in this package (nothing is fetched from the internet). It reads and changes state
only through the objects the API uses: the engine, the key and usage store, the batch
service and the catalog reload.
"""

from keepwarm.dashboard.history import MetricsHistory
from keepwarm.dashboard.routes import DashboardServices, dashboard_router
from keepwarm.dashboard.sessions import SessionStore

__all__ = ["DashboardServices", "MetricsHistory", "SessionStore", "dashboard_router"]
