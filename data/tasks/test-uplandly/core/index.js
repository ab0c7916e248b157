const { renderYucca } = require('./yucca');
const { cleanVerbena } = require('./verbena');
