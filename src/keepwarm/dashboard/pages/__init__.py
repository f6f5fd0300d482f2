"""The dashboard's pages, one module each; every module's `register(routes)` adds its routes."""

from keepwarm.dashboard.pages import batches, keys, overview, playground, signin, usage, versions

PAGES = (
    signin.register,
    overview.register,
    usage.register,
    keys.register,
    batches.register,
    versions.register,
    playground.register,
)
