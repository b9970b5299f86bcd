"""An exported low-bit ONNX model as an MLflow pyfunc defined in code: prompts in, text out.

Its artifact is the export folder (model.onnx, config, tokenizer, quantization.json). It loads with
onnxruntime kept exact for fused 4-bit matmuls (`session.qdq_matmulnbits_accuracy_level = 0`).
"""

import mlflow
import pandas as pd


class OnnxCausalLM(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForCausalLM
        from transformers import AutoTokenizer

        options = ort.SessionOptions()
        options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
        folder = context.artifacts["onnx_dir"]
        self.model = ORTModelForCausalLM.from_pretrained(folder, session_options=options)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        tokens = int((params or {}).get("max_new_tokens", 32))
        texts = []
        for prompt in pd.DataFrame(model_input)["prompt"]:
            batch = self.tokenizer(prompt, return_tensors="pt", return_token_type_ids=False)
            out = self.model.generate(**batch, max_new_tokens=tokens, do_sample=False)
            texts.append(self.tokenizer.decode(out[0][batch["input_ids"].shape[1]:], skip_special_tokens=True))
        return pd.DataFrame({"text": texts})


mlflow.models.set_model(OnnxCausalLM())
