"""Default configuration of reid_pbn.

Every key carries a comment. Configs in ``configs/`` override these values and may inherit
from each other with ``_BASE_``. Command-line ``KEY VALUE`` pairs override both.
"""

from yacs.config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
# Meta-architecture (registry name in reid_pbn.modeling.meta_arch): "Baseline" is
# backbone + embedding head + losses.
_C.MODEL.META_ARCHITECTURE = "Baseline"
# Device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
_C.MODEL.DEVICE = "auto"
# Path of a full model checkpoint to load before training or evaluation ("" for none).
_C.MODEL.WEIGHTS = ""
# Load MODEL.WEIGHTS even when its keys do not match the model (missing or unexpected keys are
# then left as initialized / ignored, with a warning). Off: such a file is refused with the
# counts and examples of the mismatch, since it would give meaningless features.
_C.MODEL.WEIGHTS_PARTIAL_OK = False

_C.MODEL.BACKBONE = CN()
# Backbone registry name (reid_pbn.modeling.backbones.BACKBONE_REGISTRY): "resnet" (with DEPTH,
# IBN) or torchreid's "osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0",
# "osnet_ain_x1_0".
_C.MODEL.BACKBONE.NAME = "resnet"
# ResNet depth: 18, 34, 50 or 101 (not used by OSNet).
_C.MODEL.BACKBONE.DEPTH = 50
# Normalization used throughout the backbone: a name of reid_pbn.layers.get_norm ("BN",
# "SyncBN", "FrozenBN", "GN", "IN", "StochNorm", "PBN", "BGN", "IEBN", "DSBN").
_C.MODEL.BACKBONE.NORM = "BN"
# Keyword arguments for the norm given as "key=value" strings, e.g. ("num_groups=32",).
_C.MODEL.BACKBONE.NORM_KWARGS = ()
# IBN-Net variant: "" (plain ResNet), "a" (IBN-a) or "b" (IBN-b).
_C.MODEL.BACKBONE.IBN = ""
# Stride of the last stage: 1 keeps a larger final map (standard for re-ID), 2 as in ImageNet.
_C.MODEL.BACKBONE.LAST_STRIDE = 1
# Load ImageNet weights: from PRETRAIN_PATH when set, else through torchvision's weights API.
_C.MODEL.BACKBONE.PRETRAIN = False
# Local file with pretrained backbone weights (torchvision ResNet, IBN-Net or torchreid ImageNet
# OSNet checkpoint; OSNet weights load strictly: every key must match).
_C.MODEL.BACKBONE.PRETRAIN_PATH = ""

_C.MODEL.BACKBONE.OSNET = CN()
# Width of torchreid's fc layer (Linear + BatchNorm1d + ReLU after global pooling, part of the
# backbone as in torchreid, keys fc.*); the backbone then returns (N, FEATURE_DIM, 1, 1). 0 drops
# fc and returns the conv5 feature map (pretrained fc.* weights are then dropped).
_C.MODEL.BACKBONE.OSNET.FEATURE_DIM = 512

# Feature-statistics mixing for domain generalization, applied after chosen backbone stages in
# training only (identity at test time).
_C.MODEL.BACKBONE.MIX = CN()
# Mixing layer: "" (none), "MixStyle" (Zhou et al., ICLR 2021) or "EFDMix" (Zhang et al.,
# CVPR 2022).
_C.MODEL.BACKBONE.MIX.TYPE = ""
# Stages after which a mixing layer is applied: ResNet "stem", "layer1".."layer4"; OSNet "conv1"..
# "conv5" or the ResNet names (layer1 = conv2, layer2 = conv3, ...). The published re-ID settings
# mix after ResNet's layer1-2 and OSNet's conv2-3, i.e. the default for both.
_C.MODEL.BACKBONE.MIX.STAGES = ("layer1", "layer2")
# Probability that a mixing layer mixes in a training forward.
_C.MODEL.BACKBONE.MIX.P = 0.5
# Concentration of the Beta(ALPHA, ALPHA) distribution of the per-sample mixing weights.
_C.MODEL.BACKBONE.MIX.ALPHA = 0.1
# Partner of each sample: "random" (a shuffle of the batch) or "crossdomain" (a sample of another
# domain, from the batch's domain labels; without two domains in the batch, the other half of the
# batch, as the published code assumes).
_C.MODEL.BACKBONE.MIX.MODE = "random"

# Options of Patch-aware Batch Normalization (used when NORM is "PBN", or DSBN with PBN inside).
_C.MODEL.BACKBONE.PBN = CN()
# Backbone stages whose BN layers become PBN; the others stay BN ("stem" includes the
# first conv's BN; downsample BNs follow their stage).
_C.MODEL.BACKBONE.PBN.STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
# How patch and accumulated statistics combine: "stochastic" (official code: per-channel
# Bernoulli choice between running and patch statistics) or "weighted" (paper text:
# lam * running + (1 - lam) * patch).
_C.MODEL.BACKBONE.PBN.MIX = "stochastic"
# Probability of using the patch (batch) statistics per channel in the "stochastic" form.
_C.MODEL.BACKBONE.PBN.P = 0.5
# Weight of the running statistics in the "weighted" form.
_C.MODEL.BACKBONE.PBN.LAM = 0.5
# Split modes allowed: 0 whole map, 1 two patches, 2 four patches.
_C.MODEL.BACKBONE.PBN.MODES = (0, 1, 2)
# How many of the allowed modes are drawn (without repetition) per training forward.
_C.MODEL.BACKBONE.PBN.NUM_MODES = 2
# (lo, hi): cut positions along a side of length s are drawn uniformly from
# [floor(s * lo), floor(floor(s * lo) * hi / lo)); the default is the official [s//4, (s//4)*3).
_C.MODEL.BACKBONE.PBN.CUT_RANGE = (0.25, 0.75)
# Shortest patch side: cuts leaving a shorter side are excluded; a mode with no possible cut
# falls back to whole-map normalization.
_C.MODEL.BACKBONE.PBN.MIN_SIZE = 2
# All-reduce PBN's patch statistics across DDP processes, for small per-GPU batches; like SyncBN
# (the processes share rank 0's random draws and act as one batch; no effect without DDP).
_C.MODEL.BACKBONE.PBN.SYNC = False

# Domain-specific BN (used when NORM is "DSBN").
_C.MODEL.BACKBONE.DSBN = CN()
# Norm used inside each domain branch ("BN" or "PBN").
_C.MODEL.BACKBONE.DSBN.INNER = "BN"
# Give every domain its own affine parameters (default: shared affine).
_C.MODEL.BACKBONE.DSBN.PER_DOMAIN_AFFINE = False

_C.MODEL.HEADS = CN()
# Head registry name (reid_pbn.modeling.heads.HEAD_REGISTRY).
_C.MODEL.HEADS.NAME = "EmbeddingHead"
# Pooling: "avg" (global average), "max" or "gem" (generalized mean).
_C.MODEL.HEADS.POOL = "avg"
# Initial exponent of GeM pooling.
_C.MODEL.HEADS.GEM_P = 3.0
# Output dimension of an optional linear embedding layer (0: keep the backbone's width).
_C.MODEL.HEADS.EMBEDDING_DIM = 0
# Neck after pooling: "bnneck" (BN before the classifier, its output is the test feature)
# or "none".
_C.MODEL.HEADS.NECK = "bnneck"
# Classifier layer: "linear" or "cosine" (normalized weights and features, scaled margin).
_C.MODEL.HEADS.CLS_LAYER = "linear"
# Scale of the cosine classifier's logits.
_C.MODEL.HEADS.SCALE = 30.0
# Additive cosine margin of the cosine classifier.
_C.MODEL.HEADS.MARGIN = 0.0
# Number of training identities; 0 means "set from the training data".
_C.MODEL.HEADS.NUM_CLASSES = 0

_C.MODEL.LOSSES = CN()
# Losses to optimize, registry names in reid_pbn.modeling.losses.LOSS_REGISTRY.
_C.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss")

_C.MODEL.LOSSES.CE = CN()
# Label smoothing epsilon of the ID loss.
_C.MODEL.LOSSES.CE.EPSILON = 0.1
# Weight of the ID loss in the total.
_C.MODEL.LOSSES.CE.SCALE = 1.0

_C.MODEL.LOSSES.TRI = CN()
# Triplet margin; 0 selects the soft-margin form log(1 + exp(d_ap - d_an)).
_C.MODEL.LOSSES.TRI.MARGIN = 0.3
# Batch-hard mining (hardest positive and negative per anchor); else batch-all average.
_C.MODEL.LOSSES.TRI.HARD_MINING = True
# L2-normalize features before computing distances.
_C.MODEL.LOSSES.TRI.NORM_FEAT = False
# Weight of the triplet loss in the total.
_C.MODEL.LOSSES.TRI.SCALE = 1.0

_C.MODEL.LOSSES.CIRCLE = CN()
# Relaxation margin m of the circle loss.
_C.MODEL.LOSSES.CIRCLE.MARGIN = 0.25
# Scale factor gamma of the circle loss.
_C.MODEL.LOSSES.CIRCLE.GAMMA = 128.0
# Weight of the circle loss in the total.
_C.MODEL.LOSSES.CIRCLE.SCALE = 1.0

# Batch Normalization Embeddings (multi-source domain generalization; needs NORM "DSBN").
_C.MODEL.BNE = CN()
# Layers (module names) whose statistics embed domains; () means every DSBN layer.
_C.MODEL.BNE.LAYERS = ()
# Domain weighting: "inverse" (w_d proportional to 1 / W2 distance) or "softmax"
# (softmax of -distance / TEMPERATURE).
_C.MODEL.BNE.WEIGHTING = "inverse"
# Temperature of the "softmax" weighting.
_C.MODEL.BNE.TEMPERATURE = 1.0
# How the per-domain embeddings form the test feature: "weighted" sum or "concat"
# (the weighted per-domain features side by side).
_C.MODEL.BNE.COMBINE = "weighted"
# Use the BNE mapping in training too (the paper's choice): every sample runs all domain
# paths (its own with batch statistics, the others with running statistics) and the losses
# see the weighted combination. False trains each sample on its own domain path only.
_C.MODEL.BNE.TRAIN_MAPPING = True

# ---------------------------------------------------------------------------------------------
# Input pipeline
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
# Training image size (height, width).
_C.INPUT.SIZE_TRAIN = (256, 128)
# Test image size (height, width).
_C.INPUT.SIZE_TEST = (256, 128)
# Per-channel mean used to normalize images in [0, 1] (ImageNet statistics).
_C.INPUT.PIXEL_MEAN = (0.485, 0.456, 0.406)
# Per-channel standard deviation used to normalize images in [0, 1].
_C.INPUT.PIXEL_STD = (0.229, 0.224, 0.225)

_C.INPUT.FLIP = CN()
# Random horizontal flip during training.
_C.INPUT.FLIP.ENABLED = True
# Probability of the flip.
_C.INPUT.FLIP.PROB = 0.5

_C.INPUT.PADDING = CN()
# Pad then randomly crop back to SIZE_TRAIN.
_C.INPUT.PADDING.ENABLED = True
# Padding in pixels on every side.
_C.INPUT.PADDING.SIZE = 10

_C.INPUT.CJ = CN()
# Colour jitter during training.
_C.INPUT.CJ.ENABLED = False
# Probability of applying colour jitter to an image.
_C.INPUT.CJ.PROB = 0.5
# Brightness jitter strength.
_C.INPUT.CJ.BRIGHTNESS = 0.15
# Contrast jitter strength.
_C.INPUT.CJ.CONTRAST = 0.15
# Saturation jitter strength.
_C.INPUT.CJ.SATURATION = 0.1
# Hue jitter strength.
_C.INPUT.CJ.HUE = 0.1

_C.INPUT.REA = CN()
# Random erasing (Zhong et al.) during training.
_C.INPUT.REA.ENABLED = True
# Probability of erasing a rectangle in an image.
_C.INPUT.REA.PROB = 0.5

# ---------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
# Source (training) data sets, registry names; several make a multi-source job.
_C.DATASETS.NAMES = ("Market1501",)
# Target (test) data sets evaluated after training and by --eval-only; a shift family takes
# its strength in the name, e.g. "SyntheticLocal@0.33".
_C.DATASETS.TESTS = ("DukeMTMC",)
# Data root; "" uses $REID_PBN_DATASETS, else ./datasets.
_C.DATASETS.ROOT = ""
# Fail on a corrupt or unreadable image instead of logging and skipping it.
_C.DATASETS.STRICT = False
# Check at start-up that every image opens (finds corrupt files before training starts).
_C.DATASETS.VERIFY_IMAGES = True
# Extra keyword arguments for dataset constructors as "key=value" strings
# (e.g. "split_id=0" for GRID).
_C.DATASETS.KWARGS = ()

_C.DATASETS.SYNTHETIC = CN()
# Number of identities per synthetic domain (split half train, half test).
_C.DATASETS.SYNTHETIC.NUM_IDS = 120
# Number of cameras per synthetic domain.
_C.DATASETS.SYNTHETIC.NUM_CAMS = 4
# Images per identity and camera.
_C.DATASETS.SYNTHETIC.IMGS_PER_CAM = 3
# Image size (height, width) of the written synthetic images.
_C.DATASETS.SYNTHETIC.SIZE = (128, 64)
# Seed of the generator; the same seed writes the same files.
_C.DATASETS.SYNTHETIC.SEED = 0

# ---------------------------------------------------------------------------------------------
# Data loader
# ---------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
# Training sampler: "pk" (P identities x K images), "domain_balanced" (PK with every
# batch from one source domain, cycling through domains) or "random".
_C.DATALOADER.SAMPLER = "pk"
# K: images per identity in a batch.
_C.DATALOADER.NUM_INSTANCE = 4
# Worker processes per loader (0 loads in the main process).
_C.DATALOADER.NUM_WORKERS = 4

# ---------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
# Optimizer: "Adam", "AdamW" or "SGD".
_C.SOLVER.OPT = "Adam"
# Base learning rate.
_C.SOLVER.BASE_LR = 3.5e-4
# Learning-rate factor for bias parameters.
_C.SOLVER.BIAS_LR_FACTOR = 1.0
# Learning-rate factor for the classifier and neck (the head's new layers).
_C.SOLVER.HEADS_LR_FACTOR = 1.0
# Learning-rate factor for the backbone (pretrained layers): torchreid's staged_lr with
# base_lr_mult (0.2 in the MixStyle/EFDMix re-ID configs); the head keeps BASE_LR.
_C.SOLVER.BACKBONE_LR_FACTOR = 1.0
# SGD momentum.
_C.SOLVER.MOMENTUM = 0.9
# Use Nesterov momentum with SGD.
_C.SOLVER.NESTEROV = False
# Weight decay.
_C.SOLVER.WEIGHT_DECAY = 5e-4
# Weight decay of normalization-layer parameters.
_C.SOLVER.WEIGHT_DECAY_NORM = 5e-4
# Images per batch (all processes together).
_C.SOLVER.IMS_PER_BATCH = 64
# Number of training epochs.
_C.SOLVER.MAX_EPOCH = 60
# Batches per epoch on each process (the batch sampler's length, which the trainer and the LR
# schedule follow); 0 means about one pass over the training images across all processes.
_C.SOLVER.ITERS_PER_EPOCH = 0
# Learning-rate schedule after warmup: "cosine" or "multistep".
_C.SOLVER.SCHED = "multistep"
# Epochs at which "multistep" multiplies the rate by GAMMA.
_C.SOLVER.STEPS = (40, 90)
# Decay factor of "multistep".
_C.SOLVER.GAMMA = 0.1
# Final learning rate of "cosine".
_C.SOLVER.ETA_MIN_LR = 1e-7
# Linear warmup length in iterations.
_C.SOLVER.WARMUP_ITERS = 0
# Learning-rate factor at the start of warmup.
_C.SOLVER.WARMUP_FACTOR = 0.1
# Iterations during which the backbone is frozen and only the head trains.
_C.SOLVER.FREEZE_ITERS = 0
# Save a checkpoint every this many epochs (the final one is always saved).
_C.SOLVER.CHECKPOINT_PERIOD = 20
# Mixed precision: bf16 autocast on CPU, fp16 with gradient scaling on CUDA.
_C.SOLVER.AMP = False
# Clip the global gradient norm to this value (0 disables clipping).
_C.SOLVER.CLIP_GRAD_NORM = 0.0
# DDP: search each step for parameters that got no gradient (costs a graph traversal). Turned on
# automatically with FREEZE_ITERS > 0 or NORM "DSBN"; set True for custom models that skip
# parameters in some steps.
_C.SOLVER.DDP_FIND_UNUSED_PARAMETERS = False
# Log training metrics every this many iterations.
_C.SOLVER.LOG_PERIOD = 20
# Random seed (torch, numpy, Python, samplers); negative picks one from the clock.
_C.SOLVER.SEED = 0
# Deterministic algorithms (slower; makes CPU runs bit-reproducible).
_C.SOLVER.DETERMINISTIC = False

# ---------------------------------------------------------------------------------------------
# Test
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
# Evaluate on DATASETS.TESTS every this many epochs (0: only after training).
_C.TEST.EVAL_PERIOD = 0
# Also evaluate the untrained model before the first epoch (the "before" row of the summary).
_C.TEST.EVAL_AT_START = False
# Images per batch at test time.
_C.TEST.IMS_PER_BATCH = 128
# Distance: "cosine" or "euclidean".
_C.TEST.METRIC = "cosine"
# Average the features of the image and its horizontal flip.
_C.TEST.FLIP = False
# Largest rank reported in the CMC curve.
_C.TEST.MAX_RANK = 50
# Queries per chunk when computing metrics (0: choose from memory).
_C.TEST.CHUNK_SIZE = 0
# Evaluate a target with several standard splits (GRID: 10) on every split and report the mean
# (with "<metric>_std" and the per-split values), as the literature does. It applies only when
# the target is not a training source and DATASETS.KWARGS fixes no split for it; otherwise the
# configured split is used.
_C.TEST.ALL_SPLITS = True

_C.TEST.RERANK = CN()
# k-reciprocal re-ranking (Zhong et al., CVPR 2017).
_C.TEST.RERANK.ENABLED = False
# k1 of re-ranking.
_C.TEST.RERANK.K1 = 20
# k2 of re-ranking (local query expansion).
_C.TEST.RERANK.K2 = 6
# Weight of the original distance in the final distance.
_C.TEST.RERANK.LAMBDA = 0.3

_C.TEST.AQE = CN()
# Average query expansion (alpha-QE).
_C.TEST.AQE.ENABLED = False
# Number of expansion rounds.
_C.TEST.AQE.QE_TIME = 1
# Neighbours averaged into the query.
_C.TEST.AQE.QE_K = 5
# Exponent alpha weighting neighbours by similarity.
_C.TEST.AQE.ALPHA = 3.0

_C.TEST.ROC = CN()
# Report verification metrics (TPR at FPR 1e-4, 1e-3, 1e-2) over query-gallery pairs.
_C.TEST.ROC.ENABLED = False

# ---------------------------------------------------------------------------------------------
# Retrieval index (FAISS)
# ---------------------------------------------------------------------------------------------
_C.INDEX = CN()
# Index type: "Flat" (exact), "IVFFlat", "IVFPQ" or "HNSW".
_C.INDEX.TYPE = "Flat"
# Number of inverted lists of the IVF indexes (0: about 4 * sqrt(N)).
_C.INDEX.NLIST = 0
# Lists visited per query by the IVF indexes.
_C.INDEX.NPROBE = 32
# Sub-quantizers of IVF-PQ (must divide the feature dimension).
_C.INDEX.PQ_M = 64
# Bits per sub-quantizer code of IVF-PQ.
_C.INDEX.PQ_NBITS = 8
# Neighbours per node of HNSW.
_C.INDEX.HNSW_M = 32
# Use GPUs when FAISS sees any (sharded over all of them).
_C.INDEX.USE_GPU = True

# ---------------------------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------------------------
# Directory for config.yaml, log.txt, metrics.jsonl, checkpoints and evaluation results.
_C.OUTPUT_DIR = "logs/default"
