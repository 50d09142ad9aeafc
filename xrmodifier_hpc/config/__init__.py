"""The typed configuration (one TOML file drives every stage) and the grid it defines.

``schema`` holds the frozen dataclasses, TOML loading and validation against the plug-in
registries; ``grid`` the Cartesian (theta, T_true) grid and its per-point random streams.
"""

from xrmodifier_hpc.config.schema import (
    SIMULATION_SECTIONS,
    Axis,
    Config,
    EmulatorConfig,
    InstrumentConfig,
    InstrumentsConfig,
    InversionConfig,
    McmcConfig,
    MockConfig,
    ModifierConfig,
    PathsConfig,
    SimulationConfig,
    SlurmConfig,
    SourceConfig,
    TemperaturesConfig,
    load_config,
    parse_axis,
    parse_config,
    set_key,
)

__all__ = [
    "SIMULATION_SECTIONS",
    "Axis",
    "Config",
    "EmulatorConfig",
    "InstrumentConfig",
    "InstrumentsConfig",
    "InversionConfig",
    "McmcConfig",
    "MockConfig",
    "ModifierConfig",
    "PathsConfig",
    "SimulationConfig",
    "SlurmConfig",
    "SourceConfig",
    "TemperaturesConfig",
    "load_config",
    "parse_axis",
    "parse_config",
    "set_key",
]
