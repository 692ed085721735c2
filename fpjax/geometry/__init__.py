"""Riemannian geometry of a learned manifold: the `riemannian` estimator's mathematics.

A VAE trained on the bank (:mod:`~fpjax.geometry.vae`), the pull-back metric of its decoder
and curve energies (:mod:`~fpjax.geometry.metric`), geodesics (:mod:`~fpjax.geometry.geodesic`),
and the k-NN Riemannian centre of mass with the artifacts it defines
(:mod:`~fpjax.geometry.centre`). Derivations: docs/riemannian.md.
"""
from fpjax.geometry.centre import (Centre, CentreConfig, RiemannianArtifacts, centre_of_mass,
                                   count_unconverged, riemannian_artifacts)
from fpjax.geometry.geodesic import Geodesic, GeodesicConfig, geodesic, geodesics, log_map
from fpjax.geometry.metric import (Decoder, curve_energy, curve_length, identity_decoder,
                                   metric_tensor, straight_line)
from fpjax.geometry.vae import TrainedVAE, train_vae

__all__ = ['Centre', 'CentreConfig', 'Decoder', 'Geodesic', 'GeodesicConfig',
           'RiemannianArtifacts', 'TrainedVAE', 'centre_of_mass', 'count_unconverged',
           'curve_energy', 'curve_length', 'geodesic', 'geodesics', 'identity_decoder',
           'log_map', 'metric_tensor', 'riemannian_artifacts', 'straight_line', 'train_vae']
