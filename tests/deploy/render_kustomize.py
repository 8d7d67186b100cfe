#!/usr/bin/env python3
"""A small kustomize, for rendering deploy/kubernetes/overlays/* where kubectl is not installed.

It implements the part of kustomize that deploy/kubernetes uses, and refuses anything else:
resources (files and folders), components, `labels` (pairs, metadata only), `images`,
configMapGenerator / secretGenerator (files, envs, literals, behavior create|replace|merge,
options.labels; a created object needs disableNameSuffixHash: a replacement keeps its name) and `patches` given by
path (strategic merge, with lists of objects merged by `name`; containers, env, volumes...).
validate_manifests.py checks its output equals `kubectl kustomize` wherever kubectl exists.

  python3 tests/deploy/render_kustomize.py deploy/kubernetes/overlays/cpu
"""
import base64
import copy
import sys
from pathlib import Path

import yaml

KNOWN = {"apiVersion", "kind", "resources", "components", "labels", "images",
         "configMapGenerator", "secretGenerator", "generatorOptions", "patches"}


def load_kustomization(folder):
    data = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(data) - KNOWN
    if unknown:
        raise SystemExit(f"{folder}: render_kustomize.py does not implement {sorted(unknown)}")
    return data


def strategic_merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = [copy.deepcopy(x) for x in base]
        new = []
        for item in patch:
            i = next((j for j, x in enumerate(out) if x["name"] == item["name"]), None)
            if i is None:
                new.append(copy.deepcopy(item))
            else:
                out[i] = strategic_merge(out[i], item)
        return new + out  # kustomize puts the patch's new items first
    return copy.deepcopy(patch)


def env_file(path):
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def generate(folder, gen, kind, options):
    data = {}
    for f in gen.get("files", []):
        name, _, path = f.rpartition("=") if "=" in f else (Path(f).name, "", f)
        data[name] = (folder / path).read_text()
    for e in gen.get("envs", []):
        data.update(env_file(folder / e))
    for lit in gen.get("literals", []):
        k, _, v = lit.partition("=")
        data[k] = v
    opts = {**options, **gen.get("options", {})}
    if not opts.get("disableNameSuffixHash") and gen.get("behavior", "create") == "create":
        raise SystemExit(f"{folder}: name suffix hashes are not implemented; disable them")
    meta = {"name": gen["name"]}
    if opts.get("labels"):
        meta["labels"] = dict(opts["labels"])
    doc = {"apiVersion": "v1", "kind": kind, "metadata": meta}
    if kind == "Secret":
        doc["type"] = "Opaque"
        doc["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        doc["data"] = data
    return doc, gen.get("behavior", "create")


def same(a, b):
    return a["kind"] == b["kind"] and a["metadata"]["name"] == b["metadata"]["name"]


def set_image(image, rules):
    for r in rules:
        name = r["name"]
        if image == name or image.startswith(name + ":") or image.startswith(name + "@"):
            repo, tag = name.split(":")[0] if ":" in name else name, None
            if image != name and image.startswith(name + ":"):
                tag = image[len(name) + 1:]
            elif ":" in image:
                tag = image.rsplit(":", 1)[1]
            repo = r.get("newName", repo)
            tag = r.get("newTag", tag)
            return f"{repo}:{tag}" if tag else repo
    return image


def apply(folder, docs):
    """Runs one kustomization (or component) in `folder` over `docs` (what came before it)."""
    k = load_kustomization(folder)
    own = []
    for r in k.get("resources", []):
        p = (folder / r).resolve()
        if p.is_dir():
            own.extend(build(p))
        else:
            own.extend(d for d in yaml.safe_load_all(p.read_text()) if d)
    docs = docs + own
    for c in k.get("components", []):
        docs = apply((folder / c).resolve(), docs)
    options = k.get("generatorOptions", {})
    generated = []
    for gens, kind in ((k.get("configMapGenerator", []), "ConfigMap"),
                       (k.get("secretGenerator", []), "Secret")):
        for g in gens:
            doc, behavior = generate(folder, g, kind, options)
            i = next((j for j, d in enumerate(docs) if same(d, doc)), None)
            if behavior == "create":
                if i is not None:
                    raise SystemExit(f"{folder}: {kind} {g['name']} exists already")
                docs.append(doc)
                generated.append(doc)
            elif i is None:
                raise SystemExit(f"{folder}: {kind} {g['name']} to {behavior} does not exist")
            elif behavior == "replace":
                doc["metadata"] = {**docs[i]["metadata"], **doc["metadata"]}
                docs[i] = doc
            else:  # merge
                docs[i]["data"].update(doc["data"])
    # Labels apply to this kustomization's own resources and generated objects only.
    for entry in k.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise SystemExit(f"{folder}: labels with selectors/templates are not implemented")
        for d in own + generated:
            d["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for p in k.get("patches", []):
        if "path" not in p or "target" in p:
            raise SystemExit(f"{folder}: only `patches: - path:` is implemented")
        patch = yaml.safe_load((folder / p["path"]).read_text())
        i = next((j for j, d in enumerate(docs) if same(d, patch)), None)
        if i is None:
            raise SystemExit(f"{folder}: patch {p['path']} matches nothing")
        docs[i] = strategic_merge(docs[i], {k2: v for k2, v in patch.items()
                                            if k2 not in ("apiVersion", "kind")})
    if k.get("images"):
        for d in docs:
            spec = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                c["image"] = set_image(c["image"], k["images"])
    return docs


def build(folder):
    return apply(Path(folder).resolve(), [])


if __name__ == "__main__":
    print(yaml.safe_dump_all(build(sys.argv[1]), sort_keys=False), end="")
