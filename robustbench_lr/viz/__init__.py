"""Visualisations of LR layers and of attributions, as `matplotlib.figure.Figure` objects (never written here).

| function                                              | shows                                                    |
|-------------------------------------------------------|----------------------------------------------------------|
| lr_layers(model)                                      | the LR layers, {name: LocalRelation2d}                   |
| layer_geometry(model, input_size)                     | grids and cumulative strides of every LR layer           |
| aggregation_weights(model, x, layer)                  | a layer's softmax weights (N, G, k*k, Ho, Wo) on x       |
| plot_pixel_weights(model, image, layer, pixel)        | k x k weights of every group at one output pixel         |
| plot_weights_overlay(model, image, layer, pixel)      | the same weights painted on the image                    |
| plot_geometry_priors(model, layer)                    | the learned prior of every group (softmax over window)   |
| plot_prior_evolution(model)                           | mean prior, spread and entropy, layer by layer           |
| plot_attention_shift(model, x_clean, x_adv, ...)      | a pixel's weights, clean vs adversarial                  |
| attention_drift(model, x_clean, x_adv, ...)           | per-layer Jensen-Shannon drift rows (nats)               |
| attributions / plot_attributions                      | captum maps, clean vs adversarial, for any model         |

Status: working on the repository's models (tested on lrnet_tiny and resnet_tiny). The CLI front end is
`robustbench-lr visualize`. matplotlib and captum are imported lazily, when a figure or an attribution is made.
"""

from __future__ import annotations

from .attributions import DEFAULT_METHODS, METHODS, attributions, plot_attributions
from .drift import DRIFT_KEYS, attention_drift, js_divergence
from .geometry import LayerGeometry, layer_geometry
from .layers import aggregation_weights, capture_inputs, lr_layers, resolve_layer
from .priors import plot_geometry_priors, plot_prior_evolution
from .weights import plot_attention_shift, plot_pixel_weights, plot_weights_overlay

__all__ = ["DEFAULT_METHODS", "DRIFT_KEYS", "LayerGeometry", "METHODS", "aggregation_weights", "attention_drift",
           "attributions", "capture_inputs", "js_divergence", "layer_geometry", "lr_layers", "plot_attention_shift",
           "plot_attributions", "plot_geometry_priors", "plot_pixel_weights", "plot_prior_evolution",
           "plot_weights_overlay", "resolve_layer"]
