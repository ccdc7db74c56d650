"""Every command in a ```bash block of README.md and docs/: the test(s) that run it, and how.

`tests/test_docs_commands.py` checks that this table and the docs agree, and that each named test's source (with
the module-level helpers and constants it uses) holds every word of its command. "as written": the command's
own words and nothing else; otherwise `how` says what the test adds (an output dir, fewer epochs, `make -n`).
"""

from __future__ import annotations

RUN = "tests/test_docs_commands_run.py"
FINE_TUNE = f"{RUN}::test_fine_tune_on_your_data_reaches_the_data_check"
NO_DATA = "as written on a clone without the user's files: the data paragraph names every path, exit 2"
DRY_RUN = f"{RUN}::test_dry_runs_of_the_real_models_print_the_plan"
NO_DATA_DRY_RUN = f"{RUN}::test_dry_runs_without_the_data_plan_with_a_stated_label_set"
LAUNCHER_README = "tests/distributed/test_launcher_readme_commands.py"
POSE_BOXES = "tests/tasks/pose/test_pose_predict_boxes.py"
POSE_BOXES_HOW = (
    "as written, in-process (trainers.predict.main), in a folder holding untrained tiny runs at outputs/ "
    "(tests/tiny_runs.py), imgs/ and the box files"
)

COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    # README.md
    "make setup": ((f"{RUN}::test_make_targets_run_what_the_readme_says",), "make -n: the commands, not run"),
    "make demo": ((f"{RUN}::test_make_targets_run_what_the_readme_says",), "make -n: the commands, not run"),
    "make test": ((f"{RUN}::test_make_targets_run_what_the_readme_says",), "make -n: the commands, not run"),
    "python launch.py recipes/vit_lora.py --demo": (
        ("tests/families/vit/test_vit_family.py::test_the_demo_beats_the_majority_baseline",),
        "in-process (load_recipe(demo=True), setup_run, complete_run), 3 epochs, plots off, an output dir",
    ),
    "python launch.py recipes/blip_progressive.py training.epochs=3 data.train=/data/train.json --dry-run": (
        ("tests/test_cli.py::test_readme_dry_run_with_overrides_as_written",),
        "as written",
    ),
    "accelerate launch launch.py recipes/blip_progressive.py": (
        (f"{LAUNCHER_README}::test_accelerate_launch_single_process_as_written",),
        "as written, without the recipe's data: our paragraph, then accelerate's",
    ),
    "python launch.py recipes/blip_progressive.py --launcher torchrun --zero 2 --offload --nproc 8": (
        (
            "tests/test_cli.py::test_readme_distributed_commands_without_weights_fail_before_any_worker_starts",
        ),
        "as written without data or weights: one paragraph, exit 2, before any worker",
    ),
    "python launch.py recipes/blip_progressive.py --launcher slurm --nodes 2 --gpus-per-node 8 --partition gpu "
    "--time 12:00:00": (
        (
            f"{RUN}::test_slurm_commands_without_slurm_say_so",
            f"{RUN}::test_slurm_dry_run_renders_the_job_the_command_asks_for",
        ),
        "as written without Slurm (exit 2), and with --dry-run: the #SBATCH lines",
    ),
    # docs/quickstart.md
    "python launch.py recipes/blip_progressive.py --demo": (
        ("tests/test_demo_end_to_end.py::demo_run",),
        "with an output dir added (the full 800-step demo)",
    ),
    "python launch.py recipes/blip_progressive.py --no-wandb": (
        ("tests/test_cli.py::test_training_the_real_recipe_without_weights_gives_a_clear_error",),
        "as written without data or weights",
    ),
    # docs/distributed.md
    "python launch.py recipes/blip_progressive.py --launcher accelerate --nproc 8": (
        (
            "tests/test_cli.py::test_readme_distributed_commands_without_weights_fail_before_any_worker_starts",
        ),
        "as written without data or weights: one paragraph, exit 2, before any worker",
    ),
    "python launch.py recipes/blip_progressive.py --launcher deepspeed --zero 3 --nproc 8": (
        (
            "tests/test_cli.py::test_readme_distributed_commands_without_weights_fail_before_any_worker_starts",
        ),
        "as written without data or weights: one paragraph, exit 2, before any worker",
    ),
    "accelerate launch --config_file my.yaml launch.py recipes/blip_progressive.py": (
        (f"{LAUNCHER_README}::test_accelerate_launch_with_your_yaml_as_written",),
        "as written with a 2-process my.yaml, without the recipe's data",
    ),
    "deepspeed launch.py recipes/blip_progressive.py --deepspeed ds_configs/zero2.json": (
        (f"{LAUNCHER_README}::test_deepspeed_with_your_config_as_written",),
        "as written, without the recipe's data",
    ),
    "python launch.py recipes/blip_progressive.py --launcher slurm --nodes 2 --gpus-per-node 8 --partition gpu "
    "--time 12:00:00 --dry-run": (
        (f"{RUN}::test_slurm_dry_run_renders_the_job_the_command_asks_for",),
        "as written",
    ),
    'python launch.py recipes/blip_progressive.py --launcher slurm --sweep "training.lr=1e-4" --sweep '
    '"recipes/blip_lora.py training.lr=3e-5"': (
        (
            f"{RUN}::test_slurm_commands_without_slurm_say_so",
            f"{RUN}::test_slurm_dry_run_renders_the_job_the_command_asks_for",
        ),
        "as written without Slurm (exit 2), and with --dry-run: a 2-task array",
    ),
    # docs/benchmarks.md
    "python -m benchmarks.run_all --smoke": (
        ("tests/test_benchmarks_smoke.py::smoke",),
        "with --skip scaling and an output dir added",
    ),
    "python -m benchmarks.gpu_check --smoke": (
        ("tests/test_gpu_check.py::test_gpu_check_smoke_runs_every_variant_and_writes_json_and_table",),
        "with an output dir added",
    ),
    # docs/models/*.md: fine-tune on your data
    "python launch.py recipes/blip_progressive.py data.train=my_data/train.json data.val=my_data/val.json "
    "data.images=my_data/images": ((FINE_TUNE,), NO_DATA),
    "python launch.py recipes/blip_lora.py data.train=my_data/train.jsonl data.val=my_data/val.jsonl "
    "data.images=my_data/images": ((FINE_TUNE,), NO_DATA),
    "python launch.py recipes/vit_lora.py data.train=my_data/train data.val=my_data/val": (
        (FINE_TUNE,),
        NO_DATA,
    ),
    "python launch.py recipes/vit_lora.py data.train=my_data/train.csv data.val=my_data/val.csv "
    "data.images=my_data/images": ((FINE_TUNE,), NO_DATA),
    "python launch.py recipes/detr_lora.py data.train=my_data/train.json data.val=my_data/val.json "
    "data.images=my_data/images": ((FINE_TUNE,), NO_DATA),
    "python launch.py recipes/detr_lora.py data.train=my_data/train.json data.val=my_data/val.json "
    "data.images=my_data/images lora=none": ((FINE_TUNE,), NO_DATA),
    "python launch.py recipes/vitpose_lora.py data.train=my_data/person_keypoints_train.json "
    "data.val=my_data/person_keypoints_val.json data.images=my_data/images": ((FINE_TUNE,), NO_DATA),
    "python launch.py recipes/vitpose_lora.py data.train=my_data/person_keypoints_train.json "
    "data.val=my_data/person_keypoints_val.json data.images=my_data/images evaluation.best_metric=oks_ap": (
        (FINE_TUNE,),
        NO_DATA,
    ),
    "python launch.py recipes/florence2_lora.py data.train=my_data/train.jsonl data.val=my_data/val.jsonl "
    "data.images=my_data/train/JPEGImages data.val_images=my_data/val/JPEGImages": ((FINE_TUNE,), NO_DATA),
    "python launch.py recipes/clip_minilm.py data.train=my_data/train.json data.val=my_data/val.json "
    "data.images=my_data/images": ((FINE_TUNE,), NO_DATA),
    "python launch.py recipes/clip_minilm.py --config config/clip_small_data.yaml data.train=my_data/train.json "
    "data.val=my_data/val.json data.images=my_data/images": ((FINE_TUNE,), NO_DATA),
    "python -m trainers.tasks.prompted_generation.voc_to_jsonl --voc my_data/train/Annotations --images "
    "my_data/train/JPEGImages --out my_data/train.jsonl --tasks OD,DENSE_REGION_CAPTION,CAPTION_TO_PHRASE_GROUNDING "
    "--flip": (
        (f"{RUN}::test_voc_converter_writes_jsonl_into_your_own_folder",),
        "as written, in a folder holding my_data/",
    ),
    "python -m trainers.tasks.prompted_generation.voc_to_jsonl --voc my_data/val/Annotations --images "
    "my_data/val/JPEGImages --out my_data/val.jsonl --tasks OD,DENSE_REGION_CAPTION,CAPTION_TO_PHRASE_GROUNDING": (
        (f"{RUN}::test_voc_converter_writes_jsonl_into_your_own_folder",),
        "as written, in a folder holding my_data/",
    ),
    # docs/models/vitpose.md: predict with person boxes per image
    "python -m trainers.predict outputs/vitpose_lora --images imgs/ --out preds.jsonl --draw --boxes boxes.json": (
        (
            f"{POSE_BOXES}::test_a_boxes_file_with_two_people_gives_two_instances_each_its_own_box_s_prediction",
        ),
        POSE_BOXES_HOW,
    ),
    "python -m trainers.predict outputs/vitpose_lora --images imgs/ --out preds.jsonl --boxes detections.json "
    "--person-category 1 --box-threshold 0.3": (
        (f"{POSE_BOXES}::test_coco_detection_results_keep_people_above_the_threshold",),
        POSE_BOXES_HOW,
    ),
    "python -m trainers.predict outputs/vitpose_lora --images imgs/ --out preds.jsonl --draw --detector "
    "outputs/detr_lora": (
        (f"{POSE_BOXES}::test_a_detector_run_gives_the_boxes_of_its_person_label",),
        POSE_BOXES_HOW,
    ),
    # docs/models/*.md: demos and dry-runs
    "python launch.py recipes/vit_lora.py data.labels=cat,dog,bird --dry-run": (
        (
            "tests/families/vit/test_vit_family.py::"
            "test_dry_run_of_the_real_model_counts_its_architecture_and_lora_none_is_the_full_fine_tune",
        ),
        "as written",
    ),
    "python launch.py recipes/vit_lora.py --dry-run": ((NO_DATA_DRY_RUN,), "as written"),
    "python launch.py recipes/detr_lora.py --dry-run": ((NO_DATA_DRY_RUN,), "as written"),
    "python launch.py recipes/detr_lora.py --demo": (
        ("tests/families/detr/test_detr_family.py::test_the_demo_beats_its_start_and_the_mean_box_baseline",),
        "in-process (load_recipe(demo=True), setup_run, complete_run), 4 epochs of 160 images at a constant lr, plots off, an output dir",
    ),
    "python launch.py recipes/detr_lora.py data.train=data/tiny_boxes/train.json data.val=data/tiny_boxes/val.json "
    "data.images=data/tiny_boxes/images --dry-run": ((DRY_RUN,), "as written"),
    "python launch.py recipes/vitpose_lora.py --demo": (
        ("tests/families/vitpose/test_vitpose_family.py::test_the_demo_learns_pck_above_its_start",),
        "in-process (load_recipe(demo=True), setup_run, complete_run), 6 epochs of the first 81 instances, an output dir",
    ),
    "python launch.py recipes/vitpose_lora.py --dry-run": ((DRY_RUN,), "as written"),
    "python launch.py recipes/florence2_omniparser_hybrid.py --dry-run": ((DRY_RUN,), "as written"),
    "python -m trainers.models.florence2_sizes": (
        (f"{RUN}::test_florence2_sizes_prints_the_documented_table",),
        "as written",
    ),
    "python launch.py recipes/clip_minilm.py encoder_configs.text.freeze_layers=2 --dry-run": (
        (DRY_RUN,),
        "as written",
    ),
}
