// The JS Agents SDK for the browser, bundled by esbuild into one script the test page loads
// (tests/test_webrtc_agents_sdk.py): the page reaches the SDK as `window.agentsRealtime`.
import { OpenAIRealtimeWebRTC, RealtimeAgent, RealtimeSession } from "@openai/agents-realtime";

window.agentsRealtime = { OpenAIRealtimeWebRTC, RealtimeAgent, RealtimeSession };
