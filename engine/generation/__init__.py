"""Generation: a request (`request.py`), one plan per mode (`plans.py`), the sampling
procedures the driver composes (`procedures.py`) and the driver that runs a request
against a loaded bundle (`driver.py`: plan -> encode -> condition -> sample -> decode).
"""
