# The README's commands; dev.py needs only Python, so these are conveniences.
.PHONY: main test lab deploy
main:
	python3 dev.py main
test:
	python3 dev.py test
deploy:
	.venv/bin/python deploy/run_local.py --num-clients 2 --rounds 3 --out runs/deploy

lab:
	python3 dev.py lab
