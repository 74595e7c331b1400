#!/bin/bash
# f_V with the object-autoencoder objective (issue 5): does it encode class and size better than SimCLR?
cd /work/main
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python3 -m soundsight_train.scene_image_encoder --objective object-ae --data ~/.cache/soundsight/data/scenes-5s-s0 --size 64 \
  --steps 1200 --batch 128 --lr 1e-3 --warmup 50 --eval-every 200 --threads 1 --max-minutes 30 --bg-swap 0.5 --aug-ramp 200 \
  --out runs/models/fv-ae --run-dir runs/fv-ae "$@"
