# The README's commands; dev.py needs only Python, so these are conveniences.
.PHONY: main test lab
main:
	python3 dev.py main
test:
	python3 dev.py test
lab:
	python3 dev.py lab
