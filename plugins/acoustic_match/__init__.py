"""acoustic-match plugin: speech re-rendered for the acoustics of a pictured room (AViTAR).

``acoustics`` holds the signal processing that needs no model: RT60 / DRR measurement, impulse
response estimation, blind room-acoustics estimation, synthetic impulse responses, streaming
convolution and loudness matching.
"""
