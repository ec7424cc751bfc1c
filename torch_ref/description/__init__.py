"""The description: what network to check, how to train it, on what data, how long.

    spec.py       read a description (TOML/JSON, a path or a bundled name), parse and validate it
                  section by section (network.py, training.py, data.py, with the shared checks of
                  checks.py), override [run] values
    files.py      find a description: a path, or a bundled one by name (importlib.resources)
    names.py      the registry of names a description uses (manual/names.py's, with torch's defaults)
    fits.py       will it fit: the dtype's range, the memory a run needs, before anything is allocated
"""
