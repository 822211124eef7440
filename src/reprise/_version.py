"""The version of reprise, in one place: the package and the build (hatch) read it here."""

__version__ = "0.1.0"
