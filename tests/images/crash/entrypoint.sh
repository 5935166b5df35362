#!/bin/sh
echo "starting model server on :8080"
echo "loading model weights from /models/w.bin" >&2
sleep 0.1
echo "fatal: model weights missing at /models/w.bin" >&2
exit 3
