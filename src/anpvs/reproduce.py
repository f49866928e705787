"""Old import path of ``anpvs reproduce`` (now the package :mod:`anpvs.jobs.reproduce`)."""

from .jobs.reproduce import (
    DEFAULT_SCALE,
    SAMPLED_SUFFIX,
    SCALES,
    ConfigError,
    Job,
    ProtocolError,
    available_scales,
    config_drift,
    format_summary,
    load_protocol,
    plan,
    protocol_path,
    reproduce,
    table_inputs,
)

__all__ = ["DEFAULT_SCALE", "SAMPLED_SUFFIX", "SCALES", "ConfigError", "Job", "ProtocolError", "available_scales",
           "config_drift", "format_summary", "load_protocol", "plan", "protocol_path", "reproduce", "table_inputs"]
