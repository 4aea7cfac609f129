"""torch Datasets: manifests of synthetic scenes/stacks and RGB-D folders (NYUv2, KITTI, ETH3D layouts)."""
