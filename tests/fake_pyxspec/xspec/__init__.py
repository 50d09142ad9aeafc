"""A stand-in for PyXspec (``import xspec``) for the tests: HEASoft cannot be installed here.

It implements the part of PyXspec's documented API the backend uses, with the signatures of
PyXspec's source (``xspec/xset.py``, ``fit.py``, ``model.py``, ``data.py``): ``Xset`` (chatter,
logChatter, allowPrompting, abund, xsect, seed, version, addModelString), ``Fit`` (perform,
error, steppar, stepparResults, statistic, query, statMethod), ``AllData`` (fakeit, clear,
``AllData(1)``), ``AllModels`` (clear, setEnergies), ``Model`` (componentNames, components
with parameterNames and Parameter attributes, values, energies), ``FakeitSettings``,
``Spectrum.response.arf`` and ``_pyXspec.doXspecCmd`` (which PyXspec's own setters use).

It also behaves like XSPEC where the backend must cope with XSPEC's behaviour:

* start-up (GlobalData): creates ``$HOME/.xspec`` printing "Creating a $HOME/.xspec directory
  for you" to file descriptor 1 when it is missing, creates ``.xspec/cache`` and touches
  ``cache/xautosav_<pid>.xcm``; every command rewrites that file while autosave is on;
* exit (XSGlobal::cleanUp): ``mv -f`` of a non-empty (or unreadable) autosave file, ``rm -f``
  of an empty one, through the shell, as XSPEC does;
* ``Fit.error`` from a local minimum finds the global one, moves there and prints
  "***Warning: New best fit found, fit parameters will be set to new values." to fd 1;
* a model containing ``apec`` evaluates to zero, with an error on fd 2, when
  ``FAKE_XSPEC_NO_ATOMDB=1`` (XSPEC without AtomDB files).

Toy physics (not XSPEC's): fakeit draws Poisson(norm * 50) counts in each of 20 channels
(expected counts when applyStats is False) from a generator seeded by ``Xset.seed``. The
statistic of a spectrum is ``C(T) = 100 + 50 ln(T/m)^2`` with its minimum m = the true kT
with the ARF the spectrum was faked with and 1.1 x the true kT with any other ARF. With
``SEAM[0] = (l, g)`` the global minimum moves to g x m and a local one, 5 higher, sits at
l x m; a fit that starts nearer (in ln T) to the local one ends there, as XSPEC's gradient fit
stalls at bremss's Gaunt-factor seam. ``Fit.perform`` goes to the minimum of the basin it
starts in (stays put with ``STUCK[0]``) and records where it ended (``perform_at``).
``ERROR_FLAGS`` forces the next ``Parameter.error`` status
strings. Every call is recorded in ``CALLS``.
"""

import atexit
import os
import re

import numpy as np
from astropy.io import fits

CALLS = []
ENV_AT_IMPORT = {k: os.environ.get(k) for k in ("HOME", "PFILES", "HEADASNOQUERY", "HEADASPROMPT")}
ERROR_FLAGS = []
FAIL_FITS = [False]
SEAM = [None]
STUCK = [False]
N_CHAN = 20
#: the toy response's energy bins (keV) for Model.values(1) / energies(1)
SPECTRUM_EDGES = np.linspace(0.1, 12.0, 41)
NO_ATOMDB = os.environ.get("FAKE_XSPEC_NO_ATOMDB") == "1"


def _say(fd, text):
    os.write(fd, text.encode())


# ------------------------------------------------------------------------- start-up and exit

_USER_DIR = os.path.join(os.environ.get("HOME", "/nonexistent"), ".xspec")
if not os.access(_USER_DIR, os.F_OK | os.W_OK | os.R_OK | os.X_OK):
    os.makedirs(_USER_DIR, exist_ok=True)
    _say(1, "Creating a $HOME/.xspec directory for you\n")
os.makedirs(os.path.join(_USER_DIR, "cache"), exist_ok=True)
AUTOSAVE_FILE = os.path.join(_USER_DIR, "cache", f"xautosav_{os.getpid()}.xcm")
open(AUTOSAVE_FILE, "a").close()
_AUTOSAVE = [True]


def _command(*what):
    CALLS.append(what)
    if _AUTOSAVE[0]:
        with open(AUTOSAVE_FILE, "a") as fh:
            fh.write(" ".join(str(w) for w in what[:2]) + "\n")


def _clean_up():
    # XSGlobal::cleanUp: stat() on a missing file leaves its size undefined (non-zero)
    try:
        size = os.stat(AUTOSAVE_FILE).st_size
    except OSError:
        size = 1
    if size:
        target = AUTOSAVE_FILE[: AUTOSAVE_FILE.rfind("xautosav_") + 8] + ".xcm"
        os.system(f"mv -f {AUTOSAVE_FILE} {target}")
    else:
        os.system(f"rm -f {AUTOSAVE_FILE}")


atexit.register(_clean_up)


class _PyXspecModule:
    """``xspec._pyXspec``: the C++ module; only doXspecCmd is used from outside PyXspec."""

    def doXspecCmd(self, args):
        CALLS.append(("cmd", tuple(args)))
        if list(args[:2]) == ["autosave", "off"]:
            _AUTOSAVE[0] = False


_pyXspec = _PyXspecModule()


# ------------------------------------------------------------------------------ settings


class _Xset:
    chatter = 10
    logChatter = 10
    allowPrompting = True
    abund = "angr"
    xsect = "bcmc"
    version = ("2.1.0", "12.14.0")
    _seed = None
    model_strings = {}

    @property
    def seed(self):
        return None

    @seed.setter
    def seed(self, value):
        if not isinstance(value, int):
            raise Exception("Error: Seed argument must be an integer")
        _command("seed", value)
        self._seed = value

    def addModelString(self, key, value):
        CALLS.append(("modelstring", key, value))
        self.model_strings[key] = value


Xset = _Xset()


# ------------------------------------------------------------------------------ models


class Parameter:
    def __init__(self, name, index, value):
        self.name, self.index, self._values, self.frozen = name, index, [value], False
        self.error = (0.0, 0.0, "FFFFFFFFF")

    @property
    def values(self):
        return list(self._values)

    @values.setter
    def values(self, value):
        if isinstance(value, (list, tuple)):
            self._values = [float(v) for v in value]
        else:
            self._values = [float(value)] + self._values[1:]


class Component:
    def __init__(self, name, parNames, index):
        self.name = name
        self.parameterNames = list(parNames)
        for par in parNames:
            setattr(self, par, Parameter(par, index, 1.0))
            index += 1


#: component -> (kind, parameter names, default values)
COMPONENTS = {
    "wabs": ("mul", ["nH"], [1.0]),
    "tbabs": ("mul", ["nH"], [1.0]),
    "phabs": ("mul", ["nH"], [1.0]),
    "bremss": ("add", ["kT", "norm"], [7.0, 1.0]),
    "apec": ("add", ["kT", "Abundanc", "Redshift", "norm"], [1.0, 1.0, 0.0, 1.0]),
    "mekal": ("add", ["kT", "nH", "Abundanc", "Redshift", "switch", "norm"], [1, 1, 1, 0, 1, 1]),
    "powerlaw": ("add", ["PhoIndex", "norm"], [1.0, 1.0]),
}
_TERM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\{[^}]*\})?")


def _table_component(path):
    with fits.open(path) as hdul:
        name = str(hdul[0].header["MODLNAME"]).strip()
        kind = "add" if hdul[0].header["ADDMODEL"] else "mul"
        pars = [str(n).strip() for n in hdul["PARAMETERS"].data["NAME"]]
    return name, kind, pars


class Model:
    def __init__(self, exprString, modName="", sourceNum=1, setPars=None):
        if not re.fullmatch(r"[A-Za-z0-9_*+(){}/.\s-]+", exprString):
            raise Exception(f"Error: cannot parse model expression {exprString}")
        self.expression = exprString
        self.componentNames = []
        self._kinds = {}
        index = 1
        for match in _TERM.finditer(exprString):
            word, arg = match.group(1), match.group(2)
            if word in ("atable", "mtable"):
                if not arg:
                    raise Exception("Error: table model needs a file")
                name, kind, pars = _table_component(arg[1:-1])
                if kind != ("add" if word == "atable" else "mul"):
                    raise Exception(f"Error: {word} with the wrong table type")
                pars = pars + (["norm"] if kind == "add" else [])
                defaults = [1.0] * len(pars)
            elif word in COMPONENTS:
                name = word
                kind, pars, defaults = COMPONENTS[word]
            else:
                raise Exception(f"Error: Unrecognized model component: {word}")
            attr = name
            k = 2
            while attr in self.componentNames:
                attr = f"{name}_{k}"
                k += 1
            comp = Component(attr, pars, index)
            for par, value in zip(pars, defaults):
                getattr(comp, par).values = float(value)
            index += len(pars)
            setattr(self, attr, comp)
            self.componentNames.append(attr)
            self._kinds[attr] = (word, kind)
        if not self.componentNames:
            raise Exception("Error: empty model")
        _command("model", exprString)
        AllModels.current = self

    def par(self, name):
        for comp in self.componentNames:
            if name in getattr(self, comp).parameterNames:
                return getattr(getattr(self, comp), name)

    def energies(self, spectrumIndex):
        if spectrumIndex == 0:
            edges = AllModels._energies
        else:
            if AllData.spectrum is None:
                raise Exception("Error: model object is not used with spectrum 1")
            edges = SPECTRUM_EDGES
        return [f"{e:.10g}" for e in edges]

    def values(self, spectrumIndex):
        if spectrumIndex != 0 and AllData.spectrum is None:
            raise Exception("Error: no spectrum")
        edges = np.asarray(self.energies(spectrumIndex), dtype=float)
        lo, hi = edges[:-1], edges[1:]
        mid, width = 0.5 * (lo + hi), hi - lo
        total = np.zeros(mid.size)
        factor = np.ones(mid.size)
        for comp in self.componentNames:
            word, kind = self._kinds[comp]
            c = getattr(self, comp)
            v = {p: getattr(c, p).values[0] for p in c.parameterNames}
            if word == "apec" and NO_ATOMDB:
                _say(2, "***Error: cannot read file apec_v3.0.9_coco.fits\n")
                return tuple(np.zeros(mid.size))
            if kind == "mul":
                factor = factor * np.exp(-v.get("nH", 0.0) * 0.2 * mid**-2.5)
            elif word == "powerlaw":
                index = v["PhoIndex"]
                if index == 1.0:
                    total += v["norm"] * np.log(hi / lo)
                else:
                    total += v["norm"] * (hi ** (1 - index) - lo ** (1 - index)) / (1 - index)
            else:
                kt = v.get("kT", 1.0)
                total += v["norm"] * np.exp(-mid / kt) / mid * width * (1 + v.get("Abundanc", 0))
        return tuple(total * factor)


class _AllModels:
    current = None
    _energies = np.geomspace(0.5, 20.0, 41)  # XSPEC's default dummy response

    def __call__(self, groupNum, modName=""):
        return self.current

    def clear(self):
        CALLS.append(("clear_models",))
        self.current = None

    def setEnergies(self, arg1, arg2=None):
        _command("energies", arg1)
        words = arg1.split()
        if words == ["reset"]:
            self._energies = np.geomspace(0.5, 20.0, 41)
            return
        lo, hi, n, scale = float(words[0]), float(words[1]), int(words[2]), words[3]
        if scale == "log":
            self._energies = np.geomspace(lo, hi, n + 1)
        else:
            self._energies = np.linspace(lo, hi, n + 1)


AllModels = _AllModels()


# ------------------------------------------------------------------------------ data


class FakeitSettings:
    def __init__(
        self,
        response="",
        arf="",
        background="",
        exposure="",
        correction="",
        backExposure="",
        fileName="",
    ):
        self.response, self.arf, self.exposure = response, arf, str(exposure)


class _Response:
    def __init__(self, spectrum):
        self._spectrum = spectrum

    @property
    def arf(self):
        return self._spectrum.arf

    @arf.setter
    def arf(self, name):
        _command("arf", name)
        self._spectrum.arf = name
        self._spectrum.noticed_all = True  # conservative: make the caller re-apply the band


class Spectrum:
    def __init__(self, counts, exposure, arf, true_kt):
        self._counts, self.exposure, self.arf, self.true_kt = counts, exposure, arf, true_kt
        self.fake_arf = arf
        self.noticed_all = True
        self.response = _Response(self)

    def ignore(self, text):
        _command("ignore", text)
        self.noticed_all = False

    @property
    def values(self):
        counts = self._counts if self.noticed_all else self._counts[2:-2]
        return tuple(counts / self.exposure)


class _AllData:
    spectrum = None

    def clear(self):
        CALLS.append(("clear_data",))
        self.spectrum = None

    def __call__(self, n):
        if n != 1 or self.spectrum is None:
            raise Exception("Error: no such spectrum")
        return self.spectrum

    def fakeit(self, nSpectra=1, settings=None, applyStats=True, filePrefix="", noWrite=False):
        model = AllModels.current
        kt, norm = model.par("kT").values[0], model.par("norm").values[0]
        area = fits.getdata(settings.arf, "SPECRESP")["SPECRESP"] if settings.arf else None
        _command("fakeit", settings.arf, bool(applyStats), bool(noWrite), area)
        lam = np.full(N_CHAN, norm * 50.0)
        rng = np.random.default_rng(Xset._seed)
        counts = rng.poisson(lam).astype(float) if applyStats else lam
        self.spectrum = Spectrum(counts, float(settings.exposure), settings.arf, kt)


AllData = _AllData()


# ------------------------------------------------------------------------------ fitting


def toy_statistic(t, m, seam=None):
    """The fake's C(T) for a spectrum whose plain minimum is ``m`` (module docstring)."""
    t = np.asarray(t, dtype=float)
    if seam is None:
        return 100.0 + 50.0 * np.log(t / m) ** 2
    local, best = seam
    return np.minimum(
        100.0 + 50.0 * np.log(t / (best * m)) ** 2, 105.0 + 50.0 * np.log(t / (local * m)) ** 2
    )


class _Fit:
    query = "on"
    statMethod = "chi"
    _step = None

    def _plain(self):
        spectrum = AllData.spectrum
        return spectrum.true_kt * (1.0 if spectrum.arf == spectrum.fake_arf else 1.1)

    def _global(self):
        return self._plain() * (1.0 if SEAM[0] is None else SEAM[0][1])

    def _basin(self, t):
        if SEAM[0] is None:
            return self._global()
        local = SEAM[0][0] * self._plain()
        g = self._global()
        return local if abs(np.log(t / local)) < abs(np.log(t / g)) else g

    @property
    def statistic(self):
        kt = AllModels.current.par("kT").values[0]
        return float(toy_statistic(kt, self._plain(), SEAM[0]))

    def perform(self):
        spectrum = AllData.spectrum
        _command("perform", spectrum.arf, spectrum.noticed_all)
        if FAIL_FITS[0]:
            raise Exception("Error: fit failed")
        kt = AllModels.current.par("kT")
        if not (kt.frozen or STUCK[0]):
            kt.values = self._basin(kt.values[0])
        CALLS.append(("perform_at", kt.values[0], kt.frozen))

    def error(self, text):
        _command("error", text)
        kt = AllModels.current.par("kT")
        if ERROR_FLAGS:
            flags = ERROR_FLAGS.pop(0)
        elif STUCK[0] or abs(kt.values[0] / self._global() - 1) > 1e-9:
            # the search from a point that is not the global minimum finds a lower statistic
            kt.values = self._global() if not STUCK[0] else kt.values[0]
            flags = "TFFFFFFFF"
        else:
            flags = "FFFFFFFFF"
        if flags[0] == "T":
            _say(1, "***Warning: New best fit found, fit parameters will be set to new values.\n")
        best = kt.values[0]
        kt.error = (best - 0.1 * best, best + 0.2 * best, flags)

    def steppar(self, text):
        _command("steppar", text)
        words = text.split()
        lo, hi, steps = float(words[3]), float(words[4]), int(words[5])
        if words[1] == "log":
            grid = np.geomspace(lo, hi, steps + 1)
        else:
            grid = np.linspace(lo, hi, steps + 1)
        self._step = (grid, toy_statistic(grid, self._plain(), SEAM[0]))
        # XSPEC leaves the stepped parameter where the scan ended
        AllModels.current.par("kT").values = float(grid[-1])

    def stepparResults(self, arg):
        if arg == "statistic":
            return list(self._step[1])
        return list(self._step[0])


Fit = _Fit()
