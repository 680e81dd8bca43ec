"""What operators run on top of a deployment (DESIGN 3): the soak run, and more to come.

Modules here use :mod:`pmmc_ray.runtime` like any client would, and never reach inside
it; they print nothing (their command-line modules do).
"""
