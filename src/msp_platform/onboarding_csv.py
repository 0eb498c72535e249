"""Realistic onboarding files for trying the bulk imports: ``msp demo onboarding-csv``."""

from __future__ import annotations

import csv
import random
from pathlib import Path

FIRST = [
    "Ana",
    "Ben",
    "Chen",
    "Dana",
    "Eli",
    "Fatima",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Kofi",
    "Lena",
    "Marco",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
    "Uma",
    "Victor",
    "Wen",
    "Yusuf",
    "Zoe",
]
LAST = [
    "Adams",
    "Baker",
    "Chowdhury",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ibrahim",
    "Jensen",
    "Kim",
    "Lopez",
    "Murphy",
    "Nakamura",
    "Okafor",
    "Patel",
    "Quinn",
    "Reyes",
    "Singh",
    "Tran",
    "Usman",
    "Vance",
    "Walsh",
    "Young",
    "Zhang",
]
ROLES = [
    ("Registered Nurse", "Nursing", True),
    ("Physician", "Medicine", True),
    ("Pharmacist", "Pharmacy", True),
    ("Radiology Technologist", "Radiology", True),
    ("Unit Clerk", "Patient Access", False),
    ("Lab Technician", "Laboratory", True),
    ("Scheduler", "Patient Access", False),
    ("Biomedical Engineer", "Clinical Engineering", False),
    ("Case Manager", "Care Management", True),
]
DEVICES = [
    ("workstation", "Dell", "OptiPlex 7010", "Windows 11", "23H2"),
    ("laptop", "Lenovo", "ThinkPad T14", "Windows 11", "23H2"),
    ("mobile", "Zebra", "TC52", "Android", "13"),
    ("printer", "HP", "LaserJet M507", None, None),
    ("clinical_device", "GE Healthcare", "CARESCAPE B450", None, None),
    ("workstation", "HP", "EliteDesk 800 G9", "Windows 11", "23H2"),
    ("network", "Cisco", "Catalyst 9200", "IOS XE", "17.9"),
]


def write_onboarding_files(
    out: Path, *, domain: str, site_codes: list[str], users: int, devices: int, seed: int = 7
) -> tuple[Path, Path]:
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    out.mkdir(parents=True, exist_ok=True)
    users_path, devices_path = out / "users.csv", out / "devices.csv"
    emails: list[str] = []
    with users_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "email",
                "name",
                "role",
                "title",
                "department",
                "site",
                "phone",
                "vip",
                "clinical",
                "employee_id",
            ]
        )
        for i in range(users):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            title, department, clinical = rng.choice(ROLES)
            email = f"{first}.{last}.{i:05d}@{domain}".lower()
            emails.append(email)
            writer.writerow(
                [
                    email,
                    f"{first} {last}",
                    "tenant_user",
                    title,
                    department,
                    rng.choice(site_codes),
                    f"+1-217-555-{rng.randint(0, 9999):04d}",
                    "yes" if rng.random() < 0.02 else "no",
                    "yes" if clinical else "no",
                    f"E{100000 + i}",
                ]
            )
    with devices_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "kind",
                "hostname",
                "serial",
                "asset_tag",
                "manufacturer",
                "model",
                "os",
                "os_version",
                "site",
                "assigned_user",
                "status",
            ]
        )
        for i in range(devices):
            kind, maker, model, os_name, os_version = rng.choice(DEVICES)
            site = rng.choice(site_codes)
            assigned = rng.choice(emails) if emails and kind in ("laptop", "mobile") else ""
            writer.writerow(
                [
                    kind,
                    f"{site.lower()}-{kind[:3]}-{i:05d}",
                    f"SN{rng.randint(10**9, 10**10 - 1)}{i:05d}",
                    f"AT-{i:06d}",
                    maker,
                    model,
                    os_name or "",
                    os_version or "",
                    site,
                    assigned,
                    "active",
                ]
            )
    return users_path, devices_path
