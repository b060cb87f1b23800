"""c360: an open Customer 360 on Dagster. The matching core lives in `c360_pipelines.core`."""

__version__ = "0.1.0"
