#!/usr/bin/env python3
"""Writes tests/data/phone_golden.tsv: what Google's libphonenumber (the `phonenumbers`
port) makes of the formats people type. tests/phone_golden.rs checks preflight against it.

    pip install phonenumbers && python3 scripts/gen_phone_golden.py
"""
import random
import phonenumbers as pn

FORMATS = [
    "{a}{e}{s}", "({a}) {e}-{s}", "{a}.{e}.{s}", "1-{a}-{e}-{s}", "+1 {a} {e} {s}",
    "+1{a}{e}{s}", "1{a}{e}{s}", "{a}-{e}-{s} ext. 12", "({a}) {e}-{s} x7", " {a} {e} {s} ",
    "+1 ({a}) {e}-{s}",
]
FIXED = [
    ("US", "011 44 20 7946 0958"), ("US", "+44 (0)20 7946 0958"), ("US", "+44 20 7946 0958"),
    ("GB", "0044 20 7946 0958"), ("GB", "020 7946 0958"), ("GB", "+44 7911 123456"),
    ("GB", "07911 123456"), ("US", "+33 1 42 68 53 00"), ("US", "+49 30 901820"),
    ("US", "+61 2 9374 4000"), ("US", "+91 98765 43210"), ("US", "+52 55 1234 5678"),
    ("DE", "030 901820"), ("FR", "01 42 68 53 00"), ("US", "+1 800 555 1234"),
    ("US", "555-1234"), ("US", "123"), ("US", "+999 1234"), ("US", "+1 202 055 1234"),
    ("US", "+1 123 555 1234"), ("US", "0044 20 7946 0958"), ("CA", "(416) 555-0199"),
    ("US", "+1 876 927 1234"), ("US", "+1 441 295 1234"), ("US", "+1 999 555 1234"),
]


def main():
    rnd = random.Random(20261122)
    rows = []
    areas = [201, 202, 212, 213, 305, 310, 312, 404, 415, 416, 503, 512, 604, 617, 702, 713,
             718, 787, 800, 808, 876, 888, 900, 917, 999, 555, 211, 311]
    for a in areas:
        for _ in range(3):
            e = rnd.choice([rnd.randint(200, 999), 555, 911, rnd.randint(0, 199)])
            s = rnd.randint(0, 9999)
            f = rnd.choice(FORMATS)
            rows.append(("US", f.format(a=a, e=f"{e:03d}", s=f"{s:04d}")))
    rows += FIXED
    with open("tests/data/phone_golden.tsv", "w") as out:
        out.write("# region\tinput\texpected E.164 or INVALID (from python phonenumbers %s)\n" % pn.__version__)
        for region, text in rows:
            try:
                n = pn.parse(text, region)
                want = pn.format_number(n, pn.PhoneNumberFormat.E164) if pn.is_valid_number(n) else "INVALID"
            except pn.NumberParseException:
                want = "INVALID"
            out.write(f"{region}\t{text}\t{want}\n")


if __name__ == "__main__":
    main()
