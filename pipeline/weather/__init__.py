"""Weather observations: read hourly CSVs (Open-Meteo, Environment Canada, Meteostat, generic) or
fetch them from the Open-Meteo archive, map them to SI, derive each observation's condition, add them to the
store's `weather` table, and choose which station frames are joined to.

One module per idea:

- `importer`: the front door (`import_csv`, `read_csv`, `read_table`, `write_observations`);
- `table`: a file as text (`read_text`, `Text`) and as a split table (`Table`);
- `layouts`: the CSV layouts, a registry of `(name, sniff, read)` entries tried in a documented
  order (`open_meteo`, `environment_canada`, `meteostat`, `generic`);
- `columns`: which column holds which field, and in which unit (names, `--columns`, guesses);
- `units`: unit keys and the conversion to SI; `times`: observation times to UTC;
- `validation`: parsing values, nulling impossible ones (`LIMITS`), reporting them by line;
- `conditions`: the condition rules; `join`: the join station and tolerance;
- `summary`: what an import did (`WeatherImportSummary.describe()` is what the CLI prints);
- `fetch`: the Open-Meteo archive API.

`columns` (`{"temperature_c": "temp", "wind_speed_ms": "wspd:kmh"}`, optional `:unit`) and
`units` ('us' or 'si') override the guesses; naive times are UTC unless a `timezone` is given
(or the file declares one).
"""

from pipeline.weather.columns import FIELDS, TARGETS
from pipeline.weather.conditions import CONDITIONS, condition_for_code, derive_conditions
from pipeline.weather.importer import import_csv, read_csv, read_table, write_observations
from pipeline.weather.join import apply_settings, describe_join, describe_stations, set_join
from pipeline.weather.layouts.open_meteo import station_name
from pipeline.weather.summary import RejectedValue, WeatherImportSummary
from pipeline.weather.table import Table
from pipeline.weather.units import unit_in_name
from pipeline.weather.validation import LIMITS

__all__ = [
    "CONDITIONS",
    "FIELDS",
    "LIMITS",
    "TARGETS",
    "RejectedValue",
    "Table",
    "WeatherImportSummary",
    "apply_settings",
    "condition_for_code",
    "derive_conditions",
    "describe_join",
    "describe_stations",
    "import_csv",
    "read_csv",
    "read_table",
    "set_join",
    "station_name",
    "unit_in_name",
    "write_observations",
]
