// Local media: microphone through RNNoise (an AudioWorklet with its wasm served from
// /assets/rnnoise) and a gain node, camera, screen. Speaking detection for any audio stream.

import { loadRnnoise, RnnoiseWorkletNode } from "@sapphi-red/web-noise-suppressor";
import { prefs } from "./common";

let ctx: AudioContext | null = null;
export function audioContext(): AudioContext {
  if (!ctx) ctx = new AudioContext({ sampleRate: 48000 });
  if (ctx.state === "suspended") void ctx.resume();
  return ctx;
}

export function resumeAudio(): void {
  if (ctx?.state === "suspended") void ctx.resume();
}

let rnnoiseWasm: Promise<ArrayBuffer> | null = null;
let workletLoaded: Promise<void> | null = null;

export interface Microphone {
  track: MediaStreamTrack;
  stream: MediaStream;
  setGain(g: number): void;
  setMuted(m: boolean): void;
  stop(): void;
  rnnoise: boolean;
}

const optBool = (k: "auto_gain_control" | "echo_cancellation") => {
  const v = prefs.get(k);
  return typeof v === "boolean" ? v : undefined;
};

export async function microphone(): Promise<Microphone> {
  const constraints: MediaTrackConstraints = { noiseSuppression: prefs.bool("native_noise_suppression") };
  const agc = optBool("auto_gain_control");
  const ec = optBool("echo_cancellation");
  if (agc !== undefined) constraints.autoGainControl = agc;
  if (ec !== undefined) constraints.echoCancellation = ec;
  const raw = await navigator.mediaDevices.getUserMedia({ audio: constraints });
  const ac = audioContext();
  const src = ac.createMediaStreamSource(raw);
  const gain = ac.createGain();
  gain.gain.value = prefs.num("microphone_gain") ?? 1;
  let rn: RnnoiseWorkletNode | null = null;
  if (prefs.bool("rnnoise")) {
    try {
      rnnoiseWasm ??= loadRnnoise({ url: "/assets/rnnoise/rnnoise.wasm", simdUrl: "/assets/rnnoise/rnnoise_simd.wasm" });
      workletLoaded ??= ac.audioWorklet.addModule("/assets/rnnoise/workletProcessor.js");
      const [wasm] = await Promise.all([rnnoiseWasm, workletLoaded]);
      rn = new RnnoiseWorkletNode(ac, { maxChannels: 1, wasmBinary: wasm });
    } catch (e) {
      console.warn("keksbox: RNNoise unavailable, sending unfiltered audio", e);
      rn = null;
    }
  }
  const dest = ac.createMediaStreamDestination();
  if (rn) src.connect(rn).connect(gain);
  else src.connect(gain);
  gain.connect(dest);
  const track = dest.stream.getAudioTracks()[0]!;
  const stream = new MediaStream([track]);
  return {
    track,
    stream,
    rnnoise: rn !== null,
    setGain: (g) => (gain.gain.value = g),
    setMuted: (m) => (track.enabled = !m),
    stop: () => {
      for (const t of raw.getTracks()) t.stop();
      track.stop();
      src.disconnect();
      rn?.destroy();
      gain.disconnect();
    },
  };
}

function videoConstraints(): MediaTrackConstraints {
  const c: MediaTrackConstraints = {};
  const w = prefs.num("video_resolution");
  const fps = prefs.num("video_fps");
  if (w) c.width = { ideal: w };
  if (fps) c.frameRate = { ideal: fps };
  return c;
}

export async function camera(): Promise<MediaStreamTrack> {
  const c = videoConstraints();
  const facing = prefs.str("camera_facing_mode");
  if (facing) c.facingMode = { ideal: facing };
  const s = await navigator.mediaDevices.getUserMedia({ video: c });
  return s.getVideoTracks()[0]!;
}

export async function screen(): Promise<MediaStream> {
  return navigator.mediaDevices.getDisplayMedia({ video: videoConstraints(), audio: true });
}

/** Calls `on(speaking)` when the stream's level crosses audio_activity_threshold. */
export function watchSpeaking(stream: MediaStream, on: (speaking: boolean) => void): () => void {
  const ac = audioContext();
  let src: MediaStreamAudioSourceNode;
  try {
    src = ac.createMediaStreamSource(stream);
  } catch {
    return () => {};
  }
  const an = ac.createAnalyser();
  an.fftSize = 1024;
  src.connect(an);
  const buf = new Float32Array(an.fftSize);
  let last = false;
  const timer = setInterval(() => {
    an.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    const rms = Math.sqrt(sum / buf.length);
    const now = rms > (prefs.num("audio_activity_threshold") ?? 0.003);
    if (now !== last) on((last = now));
  }, 150);
  return () => {
    clearInterval(timer);
    src.disconnect();
  };
}

/** A small webp thumbnail of a video track, as a data URL, or null. */
export function thumbnail(video: HTMLVideoElement): string | null {
  if (!video.videoWidth) return null;
  const c = document.createElement("canvas");
  c.width = 160;
  c.height = Math.round((160 * video.videoHeight) / video.videoWidth);
  c.getContext("2d")?.drawImage(video, 0, 0, c.width, c.height);
  const d = c.toDataURL("image/webp", 0.5);
  return d.startsWith("data:image/webp") ? d : c.toDataURL("image/jpeg", 0.5);
}
