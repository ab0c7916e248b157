"""Print the settings in config/settings.toml as key = value lines."""

from _path import ROOT

section = ""
for line in (ROOT / "config" / "settings.toml").read_text().splitlines():
    line = line.strip()
    if line.startswith("["):
        section = line.strip("[]")
    elif "=" in line:
        key, value = (part.strip() for part in line.split("=", 1))
        print(f"{section}.{key} = {value.strip(chr(34))}")
