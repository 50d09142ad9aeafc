"""``xrmodifier init DIR``: a commented example config beside a synthetic telescope pair."""

from __future__ import annotations

from pathlib import Path

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.atomic import write_text
from xrmodifier_hpc.io.synthetic import write_pair

EXAMPLE_CONFIG = """\
# xrmodifier configuration: one file drives every stage (simulate, train, mock, invert, report).
# Paths are relative to this file's folder. Energies in keV, exposures in seconds.

[instruments.reference]          # telescope 0: trusted
arf = "instruments/reference.arf"
rmf = "instruments/reference.rmf"
exposure = 50000.0

[instruments.target]             # telescope 1: its ARF gets the correction
arf = "instruments/target.arf"
rmf = "instruments/target.rmf"
exposure = 50000.0

[source]
model = "wabs*bremss"            # wabs, bremss, atable{file.fits}; products like wabs*bremss
temperature = "kT"               # the parameter on the temperature axis (norm is always free)
params = { nH = 0.05 }           # frozen parameters (nH in 1e22 cm^-2)

[modifier]
family = "gaussian"               # 1 + A exp(-(E-mu)^2/(2 sigma^2)); or multi_gaussian, spline
[modifier.grid]   # per parameter: {linspace|logspace = [start, stop, n]} or {values = [...]}
mu = { linspace = [0.8, 3.0, 12] }
sigma = { logspace = [0.15, 0.8, 6] }
A = { linspace = [-0.2, 0.2, 7] }

[temperatures]
t_true = { logspace = [1.0, 10.0, 20] }   # true temperatures simulated (keV)

[simulation]
backend = "native"               # native (numpy/torch) or xspec (PyXspec, in the container)
mode = "poisson"                 # poisson (fakeit with noise) or asimov (expected counts)
realisations = 2                 # fakeit spectra per grid point
seed = 20261124
counts = 50000.0                 # expected counts in band per spectrum (or: norm = 0.01)
band = [0.5, 7.0]                # fitted energy band (keV)
fit_tgrid = { logspace = [0.3, 40.0, 96] }  # temperatures (keV) of the C(T) profile curves
curves = true                    # store C(T) of both fits
chunk_size = 512                 # grid points per write (and per resume step)

[emulator]
hidden = [128, 128, 128]
activation = "gelu"
epochs = 300
batch_size = 512
learning_rate = 3e-3
patience = 40
seed = 1
offgrid_points = 500             # fresh asimov points to measure accuracy off the grid

[inversion]
objective = "likelihood"         # likelihood, seed_loss, gaussian_kl or wasserstein
n_starts = 64
start_design = "sobol"
s_emu = "auto"                   # emulator error, fraction of T1 ("auto": from emulator metrics)
[inversion.mcmc]
walkers = 32
steps = 3000
burn = 1000

[mock]                           # synthetic observations: xrmodifier mock
n_sources = 40
theta = { mu = 1.6, sigma = 0.35, A = 0.15 }
t_range = [1.5, 9.0]
counts = [30000.0, 80000.0]
seed = 99

[slurm]                          # used by: xrmodifier train --executor slurm
partition = ""
account = ""
nodes = 1
gpus_per_node = 1
cpus_per_task = 8
time_minutes = 60
setup = []                       # shell lines run before the job, e.g. ["module load cuda"]

[paths]
workdir = "run"                  # grid.h5, emulator.pt, result.json, figures/ go here
"""


def init(directory: str | Path, force: bool = False) -> Path:
    """Write ``config.toml`` and ``instruments/`` (synthetic pair) into ``directory``.

    Refuses to overwrite an existing config unless ``force``.

    Parameters
    ----------
    directory : str or Path
        The project folder, created if missing.
    force : bool
        Overwrite an existing ``config.toml`` (and the synthetic responses).

    Returns
    -------
    Path
        The written ``config.toml``.

    Raises
    ------
    UserError
        ``config.toml`` exists and ``force`` is not given, or ``directory`` exists and is not
        a folder.
    """
    directory = Path(directory)
    config_path = directory / "config.toml"
    if config_path.exists() and not force:
        raise UserError("config.toml already exists (use --force to overwrite)", str(config_path))
    if directory.exists() and not directory.is_dir():
        raise UserError("exists and is not a folder", str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    write_pair(directory / "instruments")
    write_text(config_path, EXAMPLE_CONFIG)
    return config_path
