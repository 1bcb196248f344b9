"""The data layer: the embedded shapes dataset, the real CIFAR-10 loader, and how the examples are
split over clients (IID, label, quantity and feature skew).
"""
