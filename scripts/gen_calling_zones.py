#!/usr/bin/env python3
"""Writes data/calling_zones.tsv and data/us_zip_codes.tsv: where a called person is, for
calling hours. The zones come from Google libphonenumber's prefix-to-time-zone map
(resources/timezones/map_data.txt, shipped by the `phonenumbers` port), the area codes'
states and provinces from its geocoding data, and ZIP codes from the `zipcodes` package.
tests/calling_zones.rs runs this script again and diffs its output against the committed
files.

    pip install phonenumbers==9.0.43 zipcodes==3.0.0
    python3 scripts/gen_calling_zones.py [OUT_DIR]   # default: data/
"""
import os
import re
import sys
from collections import Counter

import phonenumbers
import phonenumbers.geodata as geodata
import phonenumbers.tzdata as tzdata
import zipcodes
import zoneinfo

PINNED = {"phonenumbers": "9.0.43", "zipcodes": "3.0.0"}

US_STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Florida": "FL", "Georgia": "GA",
    "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA",
    "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD",
    "Massachusetts": "MA", "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS",
    "Missouri": "MO", "Montana": "MT", "Nebraska": "NE", "Nevada": "NV",
    "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM", "New York": "NY",
    "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK",
    "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC",
    "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX", "Utah": "UT", "Vermont": "VT",
    "Virginia": "VA", "Washington State": "WA", "Washington": "WA", "West Virginia": "WV",
    "Wisconsin": "WI", "Wyoming": "WY", "Washington D.C.": "DC", "District of Columbia": "DC",
}
CA_PROVINCES = {
    "Alberta": "AB", "British Columbia": "BC", "British Colombia": "BC", "Manitoba": "MB",
    "New Brunswick": "NB", "Newfoundland and Labrador": "NL", "Newfoundland": "NL",
    "Nova Scotia": "NS", "Ontario": "ON", "Prince Edward Island": "PE", "Quebec": "QC",
    "Saskatchewan": "SK", "Northwest Territories": "NT", "Nunavut": "NU", "Yukon": "YT",
}
# NANP regions that are US territories: the TCPA reaches them, so they count as the US.
US_TERRITORIES = {"PR": "US-PR", "VI": "US-VI", "GU": "US-GU", "MP": "US-MP", "AS": "US-AS"}
KNOWN_ZONES = zoneinfo.available_timezones()
US_ZIP_STATES = set(US_STATES.values()) | {"PR", "VI", "GU", "MP", "AS"}


def versions_ok():
    got = {"phonenumbers": phonenumbers.__version__, "zipcodes": zipcodes.__version__}
    if got != PINNED:
        sys.exit(f"need {PINNED}, have {got}: the committed tables were generated from the pinned versions")


def subdivision_of(npa):
    """The country and ISO 3166-2 subdivision of an area code, or None when unassigned."""
    region = phonenumbers.region_code_for_number(
        phonenumbers.PhoneNumber(country_code=1, national_number=int(f"{npa}5550100")))
    names = []
    four = geodata.GEOCODE_DATA.get(f"1{npa}", {}).get("en")
    if four:
        names.append(four)
    else:
        # Only city-level entries ("San Antonio, TX"): the state most of them name.
        suffixes = Counter()
        for k, v in geodata.GEOCODE_DATA.items():
            if k.startswith(f"1{npa}") and len(k) > 4:
                m = re.search(r", ([A-Z]{2})$", v.get("en", ""))
                if m:
                    suffixes[m.group(1)] += 1
        if suffixes:
            names.append(suffixes.most_common(1)[0][0])
    if region in US_TERRITORIES:
        return "US", US_TERRITORIES[region]
    if region not in ("US", "CA"):
        return (region, "-") if region and region != "ZZ" else None
    if not names:
        return None
    # An area code over several provinces ("Northwest Territories/Nunavut/Yukon") takes the
    # first: the rules that apply there are national.
    name = names[0].split("/")[0]
    m = re.search(r", ([A-Z]{2})$", name)
    code = m.group(1) if m else (US_STATES.get(name) if region == "US" else CA_PROVINCES.get(name))
    if code is None and len(name) == 2:
        code = name
    if code is None:
        sys.exit(f"area code {npa}: no subdivision for geocoder name {name!r} ({region})")
    return region, f"{region}-{code}"


def zones_table():
    rows = []
    for prefix in sorted(tzdata.TIMEZONE_DATA):
        zones = tzdata.TIMEZONE_DATA[prefix]
        rows.append(f"zone\t{prefix}\t{' '.join(zones)}")
    return rows


def areas_table():
    rows = []
    for npa in range(200, 1000):
        s = subdivision_of(npa)
        if s is not None:
            rows.append(f"area\t{npa}\t{s[0]}\t{s[1]}")
    return rows


def zip_table():
    """Runs of consecutive ZIP codes with one state and zone, gaps bridged when both sides agree."""
    zips = []
    for z in zipcodes.list_all():
        if z["country"] != "US" or z["state"] not in US_ZIP_STATES:
            continue
        # A few entries name a town instead of a zone ("Napakiak"): no zone, then.
        zone = z["timezone"] if z["timezone"] in KNOWN_ZONES else "-"
        zips.append((int(z["zip_code"]), z["state"], zone))
    zips.sort()
    runs = []
    for code, state, zone in zips:
        if runs and runs[-1][2] == state and runs[-1][3] == zone:
            runs[-1][1] = code
        else:
            runs.append([code, code, state, zone])
    return [f"zip\t{a:05d}\t{b:05d}\tUS-{s}\t{z}" for a, b, s, z in runs]


def main():
    versions_ok()
    out = sys.argv[1] if len(sys.argv) > 1 else "data"
    head = (f"# Generated by scripts/gen_calling_zones.py from phonenumbers {phonenumbers.__version__} "
            f"and zipcodes {zipcodes.__version__}; do not edit.\n")
    with open(os.path.join(out, "calling_zones.tsv"), "w") as f:
        f.write(head)
        f.write("# zone\t<E.164 prefix>\t<IANA zones> (longest prefix wins)\n")
        f.write("# area\t<NANP area code>\t<country>\t<ISO 3166-2 subdivision, - for none>\n")
        for r in zones_table() + areas_table():
            f.write(r + "\n")
    with open(os.path.join(out, "us_zip_codes.tsv"), "w") as f:
        f.write(head)
        f.write("# zip\t<first>\t<last>\t<ISO 3166-2 subdivision>\t<IANA zone, - for unknown>\n")
        for r in zip_table():
            f.write(r + "\n")


if __name__ == "__main__":
    main()
