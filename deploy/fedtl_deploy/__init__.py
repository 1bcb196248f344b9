"""fedtl's federated transfer learning as a Flower app (chapter "From simulation to deployment")."""
