"""virtfleet dynamic resources: Host, BaseImage, Volume, Guest.

Pure code (spec, xmlgen, diff, units, errors) never touches a host; everything remote lives in
`providers.remote`; the resource modules hold thin provider methods that observe, decide, act.
"""
