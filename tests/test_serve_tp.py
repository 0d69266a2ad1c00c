"""`warmfast serve --tensor-parallel 2`: the OpenAI SDK against a 2-rank engine (one worker process)
gets the tokens and log-probs one process gives, for the base model and an adapter (B non-zero),
and SIGTERM stops the server and its worker."""
import warmfast as wf
from serve_process import ServerProcess


def test_openai_sdk_against_a_two_rank_server_equals_one_process(tiny):
    p = tiny("llama", n_adapters=2)
    adapters = {"a0": p.adapters["adapter_0"]}
    eng = wf.Engine.from_pretrained(p.model_dir, adapters=adapters)
    prompts = ["The capital of France is", "I feel sad today."]
    ref = {(m, q): eng.generate([wf.GenerateRequest(prompt=q, adapter=None if m == "tiny" else m,
                                                    max_new_tokens=6, logprobs=2)])[0]
           for m in ("tiny", "a0") for q in prompts}
    assert ref[("tiny", prompts[0])].token_ids != ref[("a0", prompts[0])].token_ids or \
        abs(ref[("tiny", prompts[0])].logprobs[0].logprob - ref[("a0", prompts[0])].logprobs[0].logprob) > 1e-4
    server = ServerProcess(p.model_dir, adapters, "--tensor-parallel", "2")
    try:
        client = server.client(max_retries=0, timeout=120)
        for (model, prompt), r in ref.items():
            out = client.completions.create(model=model, prompt=prompt, max_tokens=6, temperature=0, logprobs=2)
            choice = out.choices[0]
            assert choice.text == r.text, (model, prompt)
            lps = choice.logprobs.token_logprobs
            assert len(lps) == len(r.logprobs)
            assert all(abs(a - b.logprob) <= 1e-5 * max(1.0, abs(b.logprob)) for a, b in zip(lps, r.logprobs))
        code, output = server.terminate()
        assert code == 0, output[-3000:]
    finally:
        server.stop()
