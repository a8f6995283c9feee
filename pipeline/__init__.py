"""lipdub's library: everything that is not Celery.

Planning (manifest, media, price) is pure or takes its clients as arguments; the provider
client wraps WaveSpeed's REST API; the sandbox is an offline emulator of that API.
"""

__version__ = "0.1.0"
